"""What every gRPC call goes through, as every HTTP request goes through the middleware:
a request id, the API key check, the request metrics (protocol ``grpc``), the access log, and
our errors turned into gRPC status codes (never UNKNOWN; INTERNAL only for our own faults)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, TypeVar

from mlserve.logging import model_var, new_request_id, request_id_var, version_var
from mlserve.monitoring.metrics import ServingMetrics
from mlserve.serving.access import AccessKeys
from mlserve.serving.errors import status_for
from mlserve.serving.grpc.status import CLIENT_CLOSED, code_for, retry_pushback
from mlserve.serving.middleware import RequestInfo
from mlserve.serving.request_metrics import RequestMetrics

log = logging.getLogger("mlserve.access")
errors_log = logging.getLogger(__name__)

PROTOCOL = "grpc"
Access = Literal["health", "inference", "admin"]
"""Who may call: anyone unless health is protected, an inference key, the admin key."""
T = TypeVar("T")
Handler = Callable[[Any, RequestInfo, Mapping[str, str]], Awaitable[T]]
"""Answers one call: its request message, its RequestInfo and metadata (lower-case names)."""


@dataclass(frozen=True, slots=True)
class CallConfig:
    """What the call checks need from Settings."""

    keys: AccessKeys
    protect_health: bool
    access_log: bool


class CallEdge:
    """Runs handlers as calls; event-loop only."""

    def __init__(self, config: CallConfig, metrics: ServingMetrics) -> None:
        self._config = config
        self._requests = RequestMetrics(metrics)
        self._in_flight = self._requests.in_flight[PROTOCOL]

    async def run(
        self,
        context: Any,
        method: str,
        access: Access,
        handle: Handler[T],
        request: Any,
        request_id: str = "",
    ) -> T:
        """``handle``'s answer to ``request``, a call of ``method``; aborts the call with the
        status code of the error it raises. The request id is ``request_id`` (an inference
        request's ``id``), else the call's ``x-request-id`` metadata, else a new one."""
        started = time.perf_counter()
        metadata = metadata_of(context)
        request_id = request_id or metadata.get("x-request-id") or new_request_id()
        info = RequestInfo(request_id=request_id[:128], protocol=PROTOCOL)
        tokens = (request_id_var.set(info.request_id), model_var.set(None), version_var.set(None))
        self._in_flight.inc()
        status = 500
        try:
            refusal = self._refuse(access, metadata)
            if refusal is not None:
                raise refusal
            answer = await handle(request, info, metadata)
            status = 200
            return answer
        except asyncio.CancelledError:  # the client cancelled, or its deadline passed
            remaining_s = context.time_remaining()
            status = 504 if remaining_s is not None and remaining_s <= 0 else CLIENT_CLOSED
            raise
        except Exception as error:  # the gRPC edge: every error becomes a status code
            status = status_for(error)
            await _abort(context, error, status)
        finally:
            self._in_flight.dec()
            elapsed_s = time.perf_counter() - started
            self._requests.observe(info.model, info.version, PROTOCOL, status, elapsed_s)
            if info.routed is not None:
                info.routed.answered(status, elapsed_s)
            if self._config.access_log:
                _log_call(method, status, elapsed_s, info)
            for var, token in zip((request_id_var, model_var, version_var), tokens, strict=True):
                var.reset(token)

    def _refuse(self, access: Access, metadata: Mapping[str, str]) -> Exception | None:
        keys = self._config.keys
        if access == "admin":
            return keys.refuse_admin(metadata)
        if access == "health" and not self._config.protect_health:
            return None
        return keys.refuse_inference(metadata)


def metadata_of(context: Any) -> dict[str, str]:
    """A call's text metadata (binary ``-bin`` entries left out); names are lower-case."""
    return {
        item.key: item.value
        for item in context.invocation_metadata() or ()
        if isinstance(item.value, str)
    }


async def _abort(context: Any, error: Exception, status: int) -> NoReturn:
    if status >= 500 and status not in (503, 504):
        errors_log.error("unhandled error", exc_info=error)
        message = "internal server error"
    else:
        message = str(error)
    await context.abort(code_for(status), message, trailing_metadata=retry_pushback(error))
    raise AssertionError("context.abort returned")  # it raises; this keeps the type honest


def _log_call(method: str, status: int, elapsed_s: float, info: RequestInfo) -> None:
    log.info(
        "request",
        extra={
            "method": "gRPC",
            "path": method,
            "status": status,
            "grpc_status": code_for(status).name,
            "latency_ms": round(elapsed_s * 1000, 3),
            "protocol": PROTOCOL,
            "model": info.model or None,
            "version": info.version or None,
        },
    )
