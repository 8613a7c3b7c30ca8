"""The standard ``grpc.health.v1.Health`` service (what Kubernetes' gRPC probes and
grpc-health-probe ask): the server, or one model by name, is SERVING when ready, NOT_SERVING
while loading, failed or draining; an unknown service is NOT_FOUND (``Check``) or
SERVICE_UNKNOWN (``Watch``), as the protocol says."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from mlserve.errors import MlserveError, NotFound
from mlserve.serving.grpc.calls import CallEdge
from mlserve.serving.middleware import RequestInfo
from mlserve.serving.state import ServerState

SERVICE = "grpc.health.v1.Health"
SERVER_SERVICES = frozenset({"", "inference.GRPCInferenceService"})
"""Service names that ask about the whole server."""
WATCH_INTERVAL_S = 0.5
"""How often a Watch looks at the status again (readiness has no change events)."""

Status = health_pb2.HealthCheckResponse
"""Where the serving statuses are (SERVING, NOT_SERVING, SERVICE_UNKNOWN)."""


class HealthService:
    """Check and Watch over the server's readiness."""

    def __init__(self, state: ServerState, edge: CallEdge) -> None:
        self._state = state
        self._edge = edge

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's method table, for ``grpc.aio.Server.add_generic_rpc_handlers``."""
        request = health_pb2.HealthCheckRequest.FromString
        response = health_pb2.HealthCheckResponse.SerializeToString
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self.check, request_deserializer=request, response_serializer=response
                ),
                "Watch": grpc.unary_stream_rpc_method_handler(
                    self.watch, request_deserializer=request, response_serializer=response
                ),
            },
        )

    async def check(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        """The status of the server or of one model; NOT_FOUND for an unknown name."""
        return await self._edge.run(context, f"/{SERVICE}/Check", "health", self._check, request)

    async def watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        """The status now, then each change, until the client leaves or the server drains."""

        async def stream(
            request: health_pb2.HealthCheckRequest, _info: RequestInfo, _meta: Mapping[str, str]
        ) -> None:
            sent = None
            while True:
                status = self.status(request.service)
                status = Status.SERVICE_UNKNOWN if status is None else status
                if status != sent:
                    await context.write(health_pb2.HealthCheckResponse(status=status))
                    sent = status
                if self._state.draining:  # a stream would hold the drain up to its end
                    return
                await asyncio.sleep(WATCH_INTERVAL_S)

        await self._edge.run(context, f"/{SERVICE}/Watch", "health", stream, request)

    async def _check(
        self, request: health_pb2.HealthCheckRequest, _info: RequestInfo, _meta: Mapping[str, str]
    ) -> health_pb2.HealthCheckResponse:
        status = self.status(request.service)
        if status is None:
            raise NotFound(f"no service or model named {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    def status(self, service: str) -> int | None:
        """SERVING or NOT_SERVING for the server or a model; None for an unknown name."""
        state = self._state
        if service in SERVER_SERVICES:
            return Status.SERVING if state.is_ready else Status.NOT_SERVING
        try:
            ready = state.models.lookup(service).is_ready
        except NotFound:
            return None
        except MlserveError:  # NotReady: configured, its first load not begun
            ready = False
        return Status.SERVING if ready and not state.draining else Status.NOT_SERVING
