"""The gRPC server of one serving process: grpcio's asyncio server on the event loop uvicorn
runs, started and stopped by the app's lifespan, sharing the process's models, batchers,
caches, prediction log and metrics with REST.

With several worker processes each binds the port (SO_REUSEPORT, the kernel spreads the
connections); a lone process binds it alone, so a port another server holds fails the start
instead of splitting that server's calls with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import grpc

from mlserve.errors import ConfigError
from mlserve.monitoring.metrics import ServingMetrics
from mlserve.serving.grpc.calls import CallConfig, CallEdge
from mlserve.serving.grpc.health import HealthService
from mlserve.serving.grpc.service import InferenceService
from mlserve.serving.ports import address, check_port
from mlserve.serving.state import ServerState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GrpcConfig:
    """Where and how to listen."""

    host: str
    port: int
    max_message_bytes: int
    """Largest request accepted; grpcio refuses larger ones with RESOURCE_EXHAUSTED."""
    drain_timeout_s: float
    """On shutdown, how long calls in flight get to finish."""
    shares_port: bool
    """True when several worker processes listen on the port."""
    calls: CallConfig


TAKEN_PORT_HINT = "choose another with --grpc-port; 0 switches gRPC off"


def check_grpc_port(host: str, port: int) -> None:
    """Raise ConfigError, in one line, when ``port`` cannot be bound on ``host`` now: checked
    before the server starts (as typos are), since a failed bind inside the app's start-up
    ends in a traceback."""
    check_port(host, port, protocol="gRPC", hint=TAKEN_PORT_HINT)


class GrpcServer:
    """Listens from `start` until `stop`; both run on the serving event loop."""

    def __init__(self, config: GrpcConfig, state: ServerState, metrics: ServingMetrics) -> None:
        self._config = config
        self._state = state
        self._metrics = metrics
        self._server: Any = None

    @property
    def address(self) -> str:
        """host:port, with an IPv6 host in brackets."""
        return address(self._config.host, self._config.port)

    async def start(self) -> None:
        """Bind and start answering; raises ConfigError when the port cannot be bound."""
        config = self._config
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.so_reuseport", 1 if config.shares_port else 0),
            ]
        )
        edge = CallEdge(config.calls, self._metrics)
        server.add_generic_rpc_handlers(
            (
                InferenceService(self._state, edge).handler(),
                HealthService(self._state, edge).handler(),
            )
        )
        try:
            bound = server.add_insecure_port(self.address)
        except RuntimeError:  # grpcio raises where older versions returned 0
            bound = 0
        if not bound:
            raise ConfigError(
                f"cannot listen for gRPC on {self.address}: the port is in use or the address "
                f"is not this machine's ({TAKEN_PORT_HINT})"
            )
        await server.start()
        self._server = server
        log.info("grpc listening", extra={"address": self.address})

    async def stop(self) -> None:
        """Refuse new calls and let those in flight finish, within the drain timeout."""
        if self._server is None:
            return
        server, self._server = self._server, None
        await server.stop(self._config.drain_timeout_s)
