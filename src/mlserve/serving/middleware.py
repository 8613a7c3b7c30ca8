"""One pure-ASGI middleware: request ids, auth, body limit, metrics, access logs, version header.

Pure ASGI (not BaseHTTPMiddleware) because it sits on every request's hot path.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlserve.errors import PayloadTooLarge
from mlserve.logging import log_info, model_var, new_request_id, request_id_var, version_var
from mlserve.monitoring.metrics import ServingMetrics
from mlserve.serving.access import AccessKeys
from mlserve.serving.docs import DOCS_ASSETS
from mlserve.serving.errors import error_response
from mlserve.serving.request_metrics import RequestMetrics

if TYPE_CHECKING:
    from mlserve.serving.rollout import Routed

log = logging.getLogger("mlserve.access")

INFO_KEY = "mlserve.info"
"""Scope key of the RequestInfo that handlers fill in."""

OPEN_PATHS = frozenset({"/", "/v2/health/live", "/v2/health/ready", "/ping", "/health", "/metrics"})
"""Paths that need no key unless health is protected."""
ALWAYS_OPEN = frozenset({"/docs", "/openapi.json"})
ADMIN_PREFIX = "/v2/repository"
"""Paths that change what is served: they take the admin key, never an inference key."""


@dataclass(slots=True)
class RequestInfo:
    """Filled by handlers so the middleware can label metrics and logs."""

    request_id: str
    protocol: str
    model: str = ""
    version: str = ""
    route: str = ""
    """Why the version answers (a rollout's arm, explicit choice, production): the prediction
    log records it."""
    routed: Routed | None = None
    """Set when a rollout chose the version: told the status and duration once answered."""


@dataclass(frozen=True, slots=True)
class MiddlewareConfig:
    """What the middleware needs from Settings."""

    api_keys: tuple[str, ...]
    protect_health: bool
    max_request_bytes: int
    access_log: bool
    admin_keys: tuple[str, ...] = ()
    admin_without_key: bool = False
    """With no admin key: the repository API is open (the server listens on loopback only)."""


def protocol_of(path: str) -> str:
    """The API family a path belongs to, for metric labels."""
    if path.startswith("/v2"):
        return "v2"
    if path.startswith("/v1"):
        return "v1"
    if path in ("/invocations", "/ping"):
        return "mlflow"
    return "other"


class ObservabilityMiddleware:
    """Wraps every HTTP request; see the module docstring."""

    def __init__(self, app: ASGIApp, config: MiddlewareConfig, metrics: ServingMetrics) -> None:
        self.app = app
        self.config = config
        self.metrics = metrics
        self._access = AccessKeys(config.api_keys, config.admin_keys, config.admin_without_key)
        self._requests = RequestMetrics(metrics)
        self._in_flight = self._requests.in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = _headers(scope)
        request_id = headers.get("x-request-id") or new_request_id()
        path: str = scope["path"]
        info = RequestInfo(request_id=request_id[:128], protocol=protocol_of(path))
        scope[INFO_KEY] = info
        tokens = (request_id_var.set(info.request_id), model_var.set(None), version_var.set(None))
        status_holder = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                extra = [(b"x-request-id", info.request_id.encode())]
                if info.version:
                    extra.append((b"x-model-version", info.version.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        in_flight = self._in_flight[info.protocol]
        in_flight.inc()
        try:
            rejection = self._reject(path, headers)
            if rejection is not None:
                await error_response(rejection, path)(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            in_flight.dec()
            elapsed = time.perf_counter() - started
            self._observe(info, status_holder[0], elapsed, scope, path)
            if info.routed is not None:
                info.routed.answered(status_holder[0], elapsed)
            for var, token in zip((request_id_var, model_var, version_var), tokens, strict=True):
                var.reset(token)

    def _reject(self, path: str, headers: dict[str, str]) -> Exception | None:
        """An auth or size error to answer with instead of calling the app, if any."""
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.config.max_request_bytes:
            return PayloadTooLarge(self.config.max_request_bytes)
        if path.startswith(ADMIN_PREFIX):
            return self._access.refuse_admin(headers)
        if (
            path in ALWAYS_OPEN
            or path.startswith(DOCS_ASSETS)
            or (path in OPEN_PATHS and not self.config.protect_health)
        ):
            return None
        return self._access.refuse_inference(headers)

    def _observe(
        self, info: RequestInfo, status: int, elapsed: float, scope: Scope, path: str
    ) -> None:
        if info.protocol != "other" or path == "/metrics":
            self._requests.observe(info.model, info.version, info.protocol, status, elapsed)
        if self.config.access_log:
            log_info(
                log,
                "request",
                info.request_id,
                {
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "latency_ms": round(elapsed * 1000, 3),
                    "protocol": info.protocol,
                    "model": info.model or None,
                    "version": info.version or None,
                },
            )


def _headers(scope: Scope) -> dict[str, str]:
    """Request headers as a dict (last value wins), names lower-case."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


def request_info(scope: MutableMapping[str, Any]) -> RequestInfo:
    """The RequestInfo of the current request (a fresh one outside the middleware)."""
    info = scope.get(INFO_KEY)
    if info is None:
        info = RequestInfo(request_id=new_request_id(), protocol=protocol_of(scope.get("path", "")))
        scope[INFO_KEY] = info
    assert isinstance(info, RequestInfo)
    return info


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
