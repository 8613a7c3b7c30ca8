"""Route the three inference endpoints without FastAPI's router and dependency machinery.

FastAPI still declares these routes (for /openapi.json and /docs, and as the fallback), but
on the hot path a regular expression finds the handler and calls it directly: on one core
FastAPI's routing and per-request dependency resolution cost as much as the prediction.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

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
