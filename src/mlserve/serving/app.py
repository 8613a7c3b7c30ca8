"""create_app: wire settings, models, executor, metrics and routes into one ASGI application."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from mlserve import __version__
from mlserve.errors import MlserveError
from mlserve.inputs import InputPolicy
from mlserve.logging import configure_logging, flush_logs
from mlserve.monitoring.drift import DriftConfig
from mlserve.monitoring.metrics import MonitoringMetrics, ServingMetrics
from mlserve.monitoring.predlog import PredictionLogStore, PredictionLogWriter, WriterConfig
from mlserve.registry import RegistryStore
from mlserve.registry.opening import open_registry
from mlserve.serving import routes_drift, routes_feedback, routes_repository, routes_v1, routes_v2
from mlserve.serving.access import AccessKeys
from mlserve.serving.batching import BatchingConfig
from mlserve.serving.cache import PredictionCache, ResponseCache
from mlserve.serving.docs import DOC_MODELS, add_offline_docs, document_errors
from mlserve.serving.drift_monitor import DriftMonitor, DriftSchedule
from mlserve.serving.errors import handle_mlserve_error, handle_unexpected, json_error
from mlserve.serving.executor import InferenceExecutor
from mlserve.serving.fastpath import FastPathMiddleware, ServingApp, inference_routes
from mlserve.serving.feedback import ONLINE_REFRESH_S, UNKNOWN_RETRY_S, OnlineScores
from mlserve.serving.inference import PredictionServices
from mlserve.serving.middleware import MiddlewareConfig, ObservabilityMiddleware, is_loopback
from mlserve.serving.models import ModelManager, discover_model_dir, resolve_refs
from mlserve.serving.served import ModelSource, VersionLoader, VersionOptions
from mlserve.serving.state import ServerState
from mlserve.settings import Settings, load_settings
from mlserve.types import ModelRef

if TYPE_CHECKING:
    from mlserve.serving.grpc import GrpcServer
    from mlserve.serving.shared_cache import RedisLink

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set when several worker processes share one port; /metrics then sums them."""
INFERENCE_ENDPOINTS = (
    routes_v2.infer,
    routes_v2.infer_version,
    routes_v1.predict,
    routes_v1.predict_version,
    routes_v1.invocations,
)
"""The endpoints the fast path serves, from the routes FastAPI declares for them."""
SOURCES_ENV = "MLSERVE_SERVE_SOURCES"
"""JSON {"refs": [...], "model_dir": ...}: what worker processes serve."""


def build_app(
    settings: Settings, refs: list[str], model_dir: Path | None, *, follow_all: bool = False
) -> FastAPI:
    """The app for `mlserve serve`: registry references (default: every production alias; with
    ``follow_all``, every model, including those registered later) or a folder of
    self-describing versions with no database.

    Raises NotFound when a reference or the folder names nothing; such typos stop the start.
    """
    if model_dir is not None:
        return create_app(settings, discover_model_dir(model_dir))
    store = open_registry(settings)
    store.artifacts.check()  # a missing bucket or an unreachable store stops the start too
    followed = resolve_refs(store, refs, every_model=follow_all)
    return create_app(settings, [], refs=followed, store=store, follow_all=follow_all)


def app_from_environment() -> FastAPI:
    """Factory for worker processes: settings from the environment, models from SOURCES_ENV."""
    gc.disable()  # until the first load is done, as `mlserve serve` does (ModelManager.load_all)
    spec = orjson.loads(os.environ.get(SOURCES_ENV, "{}"))
    model_dir = spec.get("model_dir")
    settings = load_settings()
    # A worker process is an entry point of its own: the CLI's logging set-up did not reach it.
    configure_logging(settings.log_level, settings.log_format)
    return build_app(
        settings,
        list(spec.get("refs", [])),
        Path(model_dir) if model_dir else None,
        follow_all=bool(spec.get("all")),
    )


def create_app(
    settings: Settings,
    sources: list[ModelSource],
    *,
    refs: Sequence[ModelRef] = (),
    store: RegistryStore | None = None,
    metrics_registry: CollectorRegistry | None = None,
    follow_all: bool = False,
) -> FastAPI:
    """The server application: fixed ``sources`` (a model folder) or ``refs`` followed in
    ``store`` (with ``follow_all``, every model in it). Models load in the background once it
    starts."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream; *_created series double cardinality
    _quiet_framework_warnings()
    registry = metrics_registry or CollectorRegistry()
    metrics = ServingMetrics.create(registry)
    monitoring = MonitoringMetrics.create(registry)
    log_store, log_writer = _prediction_log(settings, monitoring)
    executor = InferenceExecutor(settings.inference_workers)
    services = PredictionServices(
        executor,
        metrics,
        inline_max_ms=settings.inline_predict_max_ms,
        prediction_log=log_writer,
    )
    link = _redis_link(settings)

    loader = VersionLoader(
        store=store,
        services=services,
        options=_version_options(settings, metrics, services, link),
        safe_loading=settings.safe_loading,
    )
    manager = ModelManager(
        list(refs),
        sources=sources,
        store=store,
        loader=loader,
        metrics=metrics,
        policy=settings.version_policy_for,
        follow_all=follow_all,
        reload_interval_s=settings.reload_interval_s,
    )
    state = ServerState(
        models=manager,
        max_request_bytes=settings.max_request_bytes,
        monitoring=monitoring,
        prediction_log=log_writer,
        online=(
            None
            if log_store is None
            else OnlineScores(
                log_store,
                log_writer,
                manager,
                monitoring,
                settings.feedback_window_s,
                # Worker processes are told by MULTIPROC_ENV (their settings say workers=1).
                retry_unknown_s=UNKNOWN_RETRY_S if os.environ.get(MULTIPROC_ENV) else 0.0,
                accuracy_floor=settings.accuracy_floor_for,
            )
        ),
        drift=(
            None
            if log_store is None
            else DriftMonitor(
                log_store, manager, executor, monitoring, _drift_schedule(settings), log_writer
            )
        ),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(manager.follow(), name="load-models")
        hangup = _on_sighup(lambda: asyncio.create_task(manager.sync(), name="reload-now"))
        scoring = _start_monitoring(state)
        drifting = _start_drift_checks(state)
        try:
            yield
        finally:
            state.draining = True
            hangup()
            if drifting is not None:  # before the executor and the log it uses shut down
                drifting.cancel()
                await asyncio.gather(drifting, return_exceptions=True)
            loading.cancel()  # no more reloads: shutdown drains, then unloads
            await asyncio.gather(loading, return_exceptions=True)
            await manager.close()
            await _close_link(link)  # after the last request that could use it
            await asyncio.to_thread(executor.shutdown)
            await _stop_monitoring(state, scoring, log_store)
            _last_step(store)

    app = ServingApp(
        title="mlserve",
        version=__version__,
        description="Open Inference Protocol v2, a simple JSON API and MLflow-compatible scoring.",
        docs_url=None,  # add_offline_docs serves Swagger UI without a CDN
        redoc_url=None,
        lifespan=_switch_interval(
            _serving_grpc(lifespan, _grpc_server(settings, state, metrics), state),
            settings.switch_interval_ms / 1000,
        ),
    )
    app.state.mlserve = state
    app.include_router(routes_v2.router)
    app.include_router(routes_v1.router)
    app.include_router(routes_repository.router)
    app.include_router(routes_feedback.router)
    app.include_router(routes_drift.router)
    _add_error_handlers(app)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint(_request: Request) -> Response:
        return Response(_exposition(registry), media_type=CONTENT_TYPE_LATEST)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]  # FastAPI's documented hook
    add_offline_docs(app)
    middleware_config = MiddlewareConfig(
        api_keys=settings.api_keys,
        protect_health=settings.protect_health,
        max_request_bytes=settings.max_request_bytes,
        access_log=settings.access_log,
        admin_keys=settings.admin_api_keys,
        admin_without_key=is_loopback(settings.host),
    )
    fast = inference_routes([routes_v2.router, routes_v1.router], INFERENCE_ENDPOINTS)
    app.put_in_front(
        lambda fastapi_app: ObservabilityMiddleware(
            FastPathMiddleware(fastapi_app, fast, hold=settings.hold_refused_connections),
            middleware_config,
            metrics,
        )
    )
    return app


def _version_options(
    settings: Settings,
    metrics: ServingMetrics,
    services: PredictionServices,
    link: RedisLink | None,
) -> Callable[[str], VersionOptions]:
    """What a version of each model is built with: its input rules, batching and cache."""

    def options_of(name: str) -> VersionOptions:
        """What a version of model ``name`` is built with: its input rules, batching and cache."""
        options = settings.options_for(name)
        batching = BatchingConfig(
            max_batch_size=options.max_batch_size or settings.max_batch_size,
            max_batch_rows=options.max_batch_rows or settings.max_batch_rows,
            max_wait_ms=(
                settings.max_batch_wait_ms
                if options.max_batch_wait_ms is None
                else options.max_batch_wait_ms
            ),
            max_queue_rows=settings.max_queue_rows,
            max_queue_requests=settings.max_queue_requests,
            timeout_s=settings.request_timeout_s,
        )

        def cache(model: str, version: str, sha256: str) -> ResponseCache:
            hits = metrics.cache_hits.labels(model, version)
            misses = metrics.cache_misses.labels(model, version)
            # Exported (at 0) for in-process caches too: every cached version has the same series.
            errors = metrics.cache_errors.labels(model, version)
            # Settings refuse `cache: redis` without redis_url, so the link exists then.
            if options.cache == "redis" and link is not None:
                # Imported here: redis.asyncio is slow to import, and most servers never use it.
                from mlserve.serving.shared_cache import (
                    CacheCounters,
                    CachedVersion,
                    SharedCacheConfig,
                    SharedPredictionCache,
                )

                return SharedPredictionCache(
                    link,
                    CachedVersion(model, version, sha256),
                    SharedCacheConfig(
                        options.cache_ttl_s,
                        options.cache_max_entry_bytes,
                        frozenset(settings.prediction_log_redact),
                    ),
                    CacheCounters(hits, misses, errors),
                    replay=services.replay,
                )
            return PredictionCache(
                options.cache_max_bytes,
                options.cache_ttl_s,
                hits=hits,
                misses=misses,
                replay=services.replay,
                max_entry_bytes=options.cache_max_entry_bytes,
            )

        return VersionOptions(
            input_policy=InputPolicy.from_rules(settings.input_rules_for(name)),
            batching=batching,
            cache=cache if options.cache else None,
        )

    return options_of


def _grpc_server(
    settings: Settings, state: ServerState, metrics: ServingMetrics
) -> GrpcServer | None:
    """The gRPC server (not started), or None when grpc_port is 0."""
    if not settings.grpc_port:
        return None
    # Imported here: with gRPC off, grpc and protobuf are not imported at all.
    from mlserve.serving.grpc import CallConfig, GrpcConfig, GrpcServer

    config = GrpcConfig(
        host=settings.host,
        port=settings.grpc_port,
        max_message_bytes=settings.max_request_bytes,
        drain_timeout_s=settings.drain_timeout_s,
        # Worker processes are told by MULTIPROC_ENV (their settings say workers=1).
        shares_port=bool(os.environ.get(MULTIPROC_ENV)),
        calls=CallConfig(
            keys=AccessKeys(settings.api_keys, settings.admin_api_keys, is_loopback(settings.host)),
            protect_health=settings.protect_health,
            access_log=settings.access_log,
        ),
    )
    return GrpcServer(config, state, metrics)


def _redis_link(settings: Settings) -> RedisLink | None:
    """The connections of the shared (Redis) cache when redis_url is set (no I/O until a model
    cached there gets a request)."""
    if settings.redis_url is None:
        return None
    from mlserve.serving.shared_cache import RedisLink

    return RedisLink(settings.redis_url, settings.redis_timeout_ms / 1000)


async def _close_link(link: RedisLink | None) -> None:
    if link is not None:
        await link.close()


def _quiet_framework_warnings() -> None:
    """FastAPI builds its path parameters (``model_version``, …) with ``Field(alias=...)``, and
    pydantic 2.12+ warns about that the first time such a route is matched through FastAPI's
    router: nothing a user can act on, and it would land in the JSON logs."""
    warnings.filterwarnings(
        "ignore", message=r"The 'alias' attribute with value '\w+' was provided to the `Field\(\)`"
    )


def _last_step(store: RegistryStore | None) -> None:
    """Close the registry, then write out the buffered log lines: uvicorn's workers die by the
    SIGTERM they re-raise once shut down, skipping exit handlers, so this is the last point
    where their lines can be written."""
    if store is not None:
        store.close()
    flush_logs()


def _on_sighup(reload_now: Callable[[], object]) -> Callable[[], None]:
    """Run ``reload_now`` on SIGHUP (``kill -HUP``: follow the registry at once); returns the
    undo. Where signals cannot be handled here (not the main thread, Windows) it does nothing."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload_now)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError):
        return lambda: None

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return undo


def _prediction_log(
    settings: Settings, metrics: MonitoringMetrics
) -> tuple[PredictionLogStore | None, PredictionLogWriter | None]:
    """The prediction log's store and writer (not started), or neither when the log is off."""
    if not settings.prediction_log:
        return None, None
    store = PredictionLogStore(settings.resolved_prediction_log_url)
    config = WriterConfig(
        queue_rows=settings.prediction_log_queue_size,
        batch_rows=settings.prediction_log_batch_size,
        when_full=settings.prediction_log_when_full,
        sample_rate=settings.prediction_log_sample_rate,
        redact=frozenset(settings.prediction_log_redact),
        retention_s=settings.prediction_log_retention_days * 86_400,
        block_timeout_s=settings.request_timeout_s,
    )
    return store, PredictionLogWriter(store, config, metrics)


def _start_monitoring(state: ServerState) -> asyncio.Task[None] | None:
    """Start the prediction log's writer thread and the online-scores refresh task."""
    if state.prediction_log is not None:
        state.prediction_log.start()
    if state.online is None:
        return None
    return asyncio.create_task(state.online.run(ONLINE_REFRESH_S), name="online-scores")


def _serving_grpc(
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    server: GrpcServer | None,
    state: ServerState,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """``lifespan`` with the gRPC server listening inside it (when there is one): it starts
    once the app has started (a port in use fails the start), and at shutdown turns readiness
    false and lets its calls in flight finish before the app's own shutdown stops anything
    they use."""
    if server is None:
        return lifespan

    @asynccontextmanager
    async def wrapped(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app):
            await server.start()
            try:
                yield
            finally:
                state.draining = True
                await server.stop()

    return wrapped


def _switch_interval(
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]], seconds: float
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """``lifespan`` with Python's GIL switch interval set to ``seconds`` while the app runs."""

    @asynccontextmanager
    async def wrapped(app: FastAPI) -> AsyncIterator[None]:
        previous = sys.getswitchinterval()
        sys.setswitchinterval(seconds)
        try:
            async with lifespan(app):
                yield
        finally:
            sys.setswitchinterval(previous)

    return wrapped


def _drift_schedule(settings: Settings) -> DriftSchedule:
    return DriftSchedule(
        interval_s=settings.drift_interval_s,
        window_s=settings.drift_window_s,
        config=DriftConfig(alpha=settings.drift_alpha, min_rows=settings.drift_min_rows),
    )


def _start_drift_checks(state: ServerState) -> asyncio.Task[None] | None:
    """Start the scheduled drift checks (none when drift_interval_s is 0 or the log is off)."""
    if state.drift is None or state.drift.schedule.interval_s <= 0:
        return None
    return asyncio.create_task(state.drift.run(), name="drift-checks")


async def _stop_monitoring(
    state: ServerState, scoring: asyncio.Task[None] | None, log_store: PredictionLogStore | None
) -> None:
    """After the last request: stop the refresh task, write every queued prediction, close."""
    if scoring is not None:
        scoring.cancel()
        await asyncio.gather(scoring, return_exceptions=True)
    if state.prediction_log is not None:
        # Every acknowledged prediction is in the queue by now: write them all.
        await asyncio.to_thread(state.prediction_log.close)
    if log_store is not None:
        log_store.close()


def _exposition(registry: CollectorRegistry) -> bytes:
    if os.environ.get(MULTIPROC_ENV):
        combined = CollectorRegistry()
        MultiProcessCollector(combined)  # type: ignore[no-untyped-call]  # prometheus_client lacks hints here
        return generate_latest(combined)
    return generate_latest(registry)


async def _http_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    return json_error(error.status_code, str(error.detail), dict(error.headers or {}))  # Allow


async def _validation_error(_request: Request, error: Exception) -> Response:
    return json_error(400, f"invalid request: {error}")


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON with the right status: ours, Starlette's, FastAPI's, then the rest."""
    app.add_exception_handler(MlserveError, handle_mlserve_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, handle_unexpected)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the request models documented through openapi_extra."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in DOC_MODELS:
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema
    document_errors(schema)
    app.openapi_schema = schema
    return schema
