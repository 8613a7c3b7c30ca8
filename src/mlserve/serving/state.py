"""What request handlers share: models, predictor, limits, monitoring and the draining flag."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from mlserve.errors import NotFound, NotReady
from mlserve.monitoring.metrics import MonitoringMetrics
from mlserve.monitoring.predlog import PredictionLogWriter
from mlserve.serving.admission import declared_length
from mlserve.serving.drift_monitor import DriftMonitor
from mlserve.serving.feedback import OnlineScores
from mlserve.serving.middleware import request_info
from mlserve.serving.models import ModelManager, VersionStatus
from mlserve.serving.rollout import VERSION_HEADER
from mlserve.serving.served import ServedVersion


@dataclass(slots=True)
class ServerState:
    """Built once in create_app; ``draining`` turns true on SIGTERM."""

    models: ModelManager
    max_request_bytes: int
    monitoring: MonitoringMetrics
    prediction_log: PredictionLogWriter | None = None
    """The writer of the prediction log; None when the log is off."""
    online: OnlineScores | None = None
    """Feedback joins and online scores; None when the prediction log is off."""
    drift: DriftMonitor | None = None
    """Drift checks of served versions; None when the prediction log is off."""
    draining: bool = False

    @property
    def is_ready(self) -> bool:
        """Ready to take traffic: every model loaded and warmed, the prediction log's writer
        (when on) running, and not shutting down."""
        log_ok = self.prediction_log is None or self.prediction_log.is_running
        return not self.draining and self.models.is_ready and log_ok


def server_state(request: Request) -> ServerState:
    """The ServerState of the app handling ``request``."""
    state: ServerState = request.app.state.mlserve
    return state


async def serving_model(request: Request, name: str, version: str | None = None) -> ServedVersion:
    """The ready version for a request, recorded for metrics and the X-Model-Version header,
    once it is admitted: every inference endpoint calls this before reading the body.

    Raises NotFound saying whether the registry has what the request names (and how to serve
    it), NotReady while it loads or the server drains, Overloaded when the version's queue has
    no room for the request (decided from its Content-Length, the body left unread).
    """
    state = server_state(request)
    info = request_info(request.scope)
    if state.models.knows(name):  # unknown names stay out of metric labels: no cardinality bombs
        info.model = name
    if state.draining:
        raise NotReady("the server is shutting down")
    try:
        served, info.route, info.routed = state.models.route(name, version, request.headers)
    except NotFound:
        raise await state.models.explain_missing(
            name, version or request.headers.get(VERSION_HEADER)
        ) from None
    info.version = served.version
    served.admit(declared_length(request.headers.get("content-length")))
    return served


async def version_of(
    request: Request, name: str, version: str | None
) -> tuple[VersionStatus, ServedVersion | None]:
    """A version's status, and the version itself when it is ready (for metadata and
    readiness); raises NotFound saying whether the registry has it."""
    models = server_state(request).models
    try:
        status = models.lookup(name, version)
    except NotFound:
        raise await models.explain_missing(name, version) from None
    served = models.get(name, status.version) if status.is_ready else None
    return status, served


async def answer_with(
    request: Request,
    served: ServedVersion,
    run: Callable[[ServedVersion, str], Awaitable[Response]],
) -> Response:
    """``run(served, route)``; when a rollout sent the request to its candidate and the
    candidate fails, ``run`` again with production, so a client never sees the candidate's
    failure (the rollout counts it). A request production fails too was the client's mistake:
    its error is production's."""
    info = request_info(request.scope)
    routed = info.routed
    if routed is None or routed.production is None:
        return await run(served, info.route)
    try:
        return await run(served, info.route)
    except Exception:
        production = routed.production
        info.route = "fallback"
        response = await run(production, info.route)
        routed.failed = True
        info.version = production.version
        return response
