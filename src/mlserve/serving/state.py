"""What request handlers share: models, predictor, limits, monitoring and the draining flag."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from mlserve.errors import NotFound, NotReady
from mlserve.monitoring.metrics import MonitoringMetrics
from mlserve.monitoring.predlog import PredictionLogWriter
from mlserve.serving.admission import declared_length
from mlserve.serving.drift_monitor import DriftMonitor
from mlserve.serving.feedback import OnlineScores
from mlserve.serving.middleware import RequestInfo, request_info
from mlserve.serving.models import ModelManager, VersionStatus
from mlserve.serving.rollout import VERSION_HEADER
from mlserve.serving.served import ServedVersion

T = TypeVar("T")


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
    once it is admitted: every inference endpoint calls this before reading the body (see
    `admit`)."""
    return await admit(
        server_state(request),
        request_info(request.scope),
        Wanted(name, version, request.headers),
        declared_length(request.headers.get("content-length")),
    )


@dataclass(frozen=True, slots=True)
class Wanted:
    """What a request names: a model, maybe a version, and the headers (HTTP) or call metadata
    (gRPC) that choose one (X-Model-Version, a rollout's sticky header), lower-case names."""

    name: str
    version: str | None
    headers: Mapping[str, str]


async def admit(
    state: ServerState, info: RequestInfo, wanted: Wanted, body_bytes: int | None
) -> ServedVersion:
    """The ready version for a request of every protocol, recorded in ``info`` (metrics,
    prediction log, rollouts), once the version's queue has room for ``body_bytes``.

    Raises NotFound saying whether the registry has what the request names (and how to serve
    it), NotReady while it loads or the server drains, Overloaded when the version's queue has
    no room for the request (decided from its size, before it is decoded).
    """
    name = wanted.name
    if state.models.knows(name):  # unknown names stay out of metric labels: no cardinality bombs
        info.model = name
    if state.draining:
        raise NotReady("the server is shutting down")
    try:
        served, info.route, info.routed = state.models.route(name, wanted.version, wanted.headers)
    except NotFound:
        raise await state.models.explain_missing(
            name, wanted.version or wanted.headers.get(VERSION_HEADER)
        ) from None
    info.version = served.version
    served.admit(body_bytes)
    return served


async def version_of(
    request: Request, name: str, version: str | None
) -> tuple[VersionStatus, ServedVersion | None]:
    """A version's status, and the version itself when it is ready (for metadata and
    readiness); raises NotFound saying whether the registry has it."""
    return await status_of(server_state(request).models, name, version)


async def status_of(
    models: ModelManager, name: str, version: str | None
) -> tuple[VersionStatus, ServedVersion | None]:
    """``version_of`` for every protocol."""
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
    """``run(served, route)``, falling back to production (see `answer_routed`)."""
    return await answer_routed(request_info(request.scope), served, run)


async def answer_routed(
    info: RequestInfo, served: ServedVersion, run: Callable[[ServedVersion, str], Awaitable[T]]
) -> T:
    """``run(served, route)``; when a rollout sent the request to its candidate and the
    candidate fails, ``run`` again with production, so a client never sees the candidate's
    failure (the rollout counts it). A request production fails too was the client's mistake:
    its error is production's."""
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
