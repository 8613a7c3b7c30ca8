"""Route the inference endpoints without FastAPI's router and dependency machinery.

There is one routing table: the routes FastAPI declares (which also document /openapi.json and
/docs). On the hot path this middleware matches a POST against the inference routes' own
compiled patterns and calls their endpoint directly: on one core FastAPI's routing and
per-request dependency resolution cost as much as the prediction. `ServingApp` goes one step
further and puts mlserve's own middleware in front of FastAPI's middleware stack rather than
inside it, so inference requests skip its error, telemetry and body-limit layers too
(mlserve's middleware does those jobs itself).

A connection refused with 503 (Overloaded) is held until its Retry-After has passed: see
``admission.RetryAfterHold``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mlserve.errors import Overloaded
from mlserve.serving.admission import RetryAfterHold
from mlserve.serving.errors import error_response

Endpoint = Callable[..., Awaitable[Response]]


def inference_routes(routers: Sequence[APIRouter], endpoints: Sequence[Endpoint]) -> list[APIRoute]:
    """The POST routes of ``routers`` (the ones the app includes) for ``endpoints``."""
    wanted = set(endpoints)
    return [
        route
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
        and route.endpoint in wanted
        and "POST" in (route.methods or ())
    ]


class FastPathMiddleware:
    """Sends POSTs to the inference routes straight to their endpoints."""

    def __init__(self, app: ASGIApp, routes: Sequence[APIRoute], *, hold: bool = True) -> None:
        self.app = app
        self._routes: list[tuple[Any, Endpoint]] = [(r.path_regex, r.endpoint) for r in routes]
        self._held = RetryAfterHold() if hold else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one request."""
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        found = self._find(scope["path"])
        if found is None:
            await self.app(scope, receive, send)
            return
        endpoint, params = found
        client = scope.get("client")
        wait_s = self._held.wait_s(client, time.monotonic()) if self._held is not None else 0.0
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        request = Request(scope, receive)
        try:
            response = await endpoint(request, **params)
        except Exception as exc:  # the HTTP edge: errors become JSON, 500s are logged there
            if isinstance(exc, Overloaded) and self._held is not None:
                self._held.hold(client, exc.retry_after_s, time.monotonic())
            response = error_response(exc, scope["path"])
        await response(scope, receive, send)

    def _find(self, path: str) -> tuple[Endpoint, dict[str, str]] | None:
        """The endpoint of the first inference route matching ``path``, with its parameters."""
        for pattern, endpoint in self._routes:
            match = pattern.match(path)
            if match is not None:
                return endpoint, match.groupdict()
        return None


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
