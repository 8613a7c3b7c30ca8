"""The ports a server is about to listen on, checked before anything loads: a taken port is one
line (a ConfigError) instead of the web or gRPC stack's log lines and traceback."""

from __future__ import annotations

import socket

from mlserve.errors import ConfigError


def address(host: str, port: int) -> str:
    """host:port, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_port(host: str, port: int, *, protocol: str, hint: str) -> None:
    """Raise ConfigError when ``port`` cannot be bound on ``host`` now. The server binds it
    itself later (both uvicorn and grpcio with SO_REUSEADDR, as here); this only fails early.

    ``protocol`` names what would listen there ("" for HTTP, "gRPC"); ``hint`` says what to do.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            listen = f"listen for {protocol}" if protocol else "listen"
            raise ConfigError(
                f"cannot {listen} on {address(host, port)}: {error.strerror} ({hint})"
            ) from None
