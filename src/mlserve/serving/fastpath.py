"""Route the three inference endpoints without FastAPI's router and dependency machinery.

FastAPI still declares these routes (for /openapi.json and /docs, and as the fallback), but
on the hot path a regular expression finds the handler and calls it directly: on one core
FastAPI's routing and per-request dependency resolution cost as much as the prediction.
`ServingApp` goes one step further and puts mlserve's own middleware in front of FastAPI's
middleware stack rather than inside it, so inference requests skip its error, telemetry and
body-limit layers too (mlserve's middleware does those jobs itself).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mlserve.serving import routes_v1, routes_v2
from mlserve.serving.errors import error_response

Handler = Callable[[Request, str, str | None], Awaitable[Response]]

_V2_INFER = re.compile(r"^/v2/models/([^/]+?)(?:/versions/([^/]+))?/infer$")
_V1_PREDICT = re.compile(r"^/v1/models/([^/:]+?)(?:/versions/([^/:]+))?:predict$")


class FastPathMiddleware:
    """Sends POSTs to infer, :predict and /invocations straight to their handlers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one request."""
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        request = Request(scope, receive)
        try:
            if path == "/invocations":
                response = await routes_v1.invocations(request)
            elif (match := _V2_INFER.match(path)) is not None:
                response = await routes_v2.run_infer(request, match[1], match[2])
            elif (match := _V1_PREDICT.match(path)) is not None:
                response = await routes_v1.run_predict(request, match[1], match[2])
            else:
                await self.app(scope, receive, send)
                return
        except Exception as exc:  # the HTTP edge: errors become JSON, 500s are logged there
            response = error_response(exc)
        await response(scope, receive, send)


class ServingApp(FastAPI):
    """FastAPI with mlserve's middleware in front of FastAPI's own stack for HTTP requests."""

    _front: ASGIApp | None = None

    def put_in_front(self, wrap: Callable[[ASGIApp], ASGIApp]) -> None:
        """Route HTTP requests through ``wrap(FastAPI's own handling)``."""
        self._front = wrap(super().__call__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI event; lifespan and websockets go straight to FastAPI."""
        if self._front is None or scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # what Starlette sets first: handlers find the app state here
        await self._front(scope, receive, send)
