"""Run the application under uvicorn: one process or several on one port, draining on SIGTERM."""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from types import FrameType
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI

from mlserve.serving.app import MULTIPROC_ENV, SOURCES_ENV
from mlserve.serving.middleware import is_loopback
from mlserve.serving.ports import check_port
from mlserve.serving.state import ServerState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """How to listen and shut down."""

    host: str
    port: int
    workers: int
    drain_timeout_s: float
    has_api_key: bool


class DrainingServer(uvicorn.Server):
    """Turns readiness false the moment a shutdown signal arrives, then shuts down as usual.

    uvicorn then stops accepting connections, lets in-flight requests finish within
    ``timeout_graceful_shutdown`` and runs the lifespan shutdown.
    """

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self._state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler: mark draining, then let uvicorn stop (a second SIGINT forces it).

        Not ``super().handle_exit``: uvicorn records the signal and re-raises it once shut down,
        so the process would die by SIGTERM (exit -15) instead of exiting 0 after a clean drain.
        """
        self._state.draining = True
        log.info("shutting down", extra={"signal": sig})
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def check_http_port(host: str, port: int) -> None:
    """Raise ConfigError, in one line, when ``port`` cannot be bound on ``host`` now: uvicorn
    would say so in several log lines and exit with its own code."""
    check_port(host, port, protocol="", hint="another server? choose another port with --port")


def warn_if_exposed(options: ServeOptions) -> str | None:
    """A warning when the server listens beyond loopback without an API key."""
    if is_loopback(options.host) or options.has_api_key:
        return None
    message = (
        f"listening on {options.host} with no API key: anyone who can reach this port can "
        "call the models; set MLSERVE_API_KEY"
    )
    log.warning("exposed without auth", extra={"host": options.host})
    return message


def serve_single(app: FastAPI, options: ServeOptions) -> None:
    """One process: run until SIGTERM or SIGINT, draining in-flight requests."""
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=math.ceil(options.drain_timeout_s),
    )
    DrainingServer(config, app.state.mlserve).run()


def serve_workers(
    factory: str, options: ServeOptions, spec: dict[str, Any], env: dict[str, str]
) -> None:
    """Several processes on one port; each builds the app with ``factory`` from the environment.

    Metrics of all workers are summed through prometheus_client's multiprocess mode.
    """
    metrics_dir = tempfile.mkdtemp(prefix="mlserve-metrics-")
    os.environ.update(env)
    os.environ[SOURCES_ENV] = orjson.dumps(spec).decode()
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run(
            factory,
            factory=True,
            host=options.host,
            port=options.port,
            workers=options.workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=math.ceil(options.drain_timeout_s),
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
