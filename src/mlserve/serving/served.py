"""One served model version: everything a request needs, built in one place, handed out ready.

A `ServedVersion` is complete when it exists: its runtime is loaded and verified, its input
checker probed, the model warmed, and its micro-batcher, cache and prediction-log hook in place.
`VersionLoader.load` is the only code that builds one; the model manager hands out only these.

Retiring a version (an alias moved away from it) never fails a request: the manager stops
handing it out first, then `retire` lets the batcher finish what is queued; a request that took
the version a moment before still predicts with it, outside the batcher.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlserve.errors import DeadlineExceeded, ModelRefused, Overloaded
from mlserve.inputs import CheckedRows, InputPolicy, build_checker, reference_batch
from mlserve.logging import new_request_id, request_id_var
from mlserve.monitoring.predlog import PendingPrediction
from mlserve.registry import ModelVersion, RegistryStore
from mlserve.runtimes import Batch, Runtime, load_runtime
from mlserve.serving.admission import RowEstimate
from mlserve.serving.batching import BatchingConfig, MicroBatcher, stack
from mlserve.serving.cache import ResponseCache
from mlserve.serving.inference import (
    PREDICT,
    PREDICT_PROBA,
    PredictionServices,
    PredictTiming,
    available_outputs,
    check_outputs,
    compute,
    name_refused_rows,
    timed,
)
from mlserve.serving.rollout import ShadowMirror
from mlserve.serving.tabular import TabularSchema
from mlserve.types import read_manifest

Outputs = dict[str, np.ndarray]
SMALL_BATCH_ROWS = 32
"""Up to this many predictions are counted per class with a Counter (np.unique costs more)."""


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A resolved model version to serve: from the registry or from a self-describing folder."""

    name: str
    version: str
    folder: Path | None = None
    registered: ModelVersion | None = None

    def __str__(self) -> str:
        return f"{self.name}:{self.version}" if self.folder is None else str(self.folder)


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a version predicted for one request, and its prediction-log item (None when the
    log is off or did not sample it and there is no cache to keep it for)."""

    outputs: Outputs
    logged: PendingPrediction | None = None


class ServedVersion:
    """A loaded, warmed model version with its batcher, cache and prediction-log hook."""

    def __init__(
        self,
        source: ModelSource,
        runtime: Runtime,
        schema: TabularSchema,
        framework: str,
        reference_profile: dict[str, Any] | None,
        services: PredictionServices,
        batching: BatchingConfig,
        cache: ResponseCache | None,
    ) -> None:
        self.name = source.name
        self.version = source.version
        self.source = source
        self.runtime = runtime
        self.schema = schema
        self.framework = framework
        self.reference_profile = reference_profile
        self.class_labels = [str(c) for c in runtime.classes]
        self.cache = cache
        self.load_s = 0.0
        self.retired = False
        self.shadow: ShadowMirror | None = None
        """Set while a rollout mirrors this version's answers to a shadow version."""
        self._services = services
        metrics = services.metrics
        labels = (self.name, self.version)
        # Metric children looked up once: .labels() takes a lock and builds a key.
        self._rows = metrics.rows.labels(*labels)
        self._class_counters: dict[object, Any] = {}
        self._rejected = {
            reason: metrics.rejected.labels(*labels, reason)
            for reason in ("overloaded", "deadline")
        }
        self._timing = PredictTiming(services.inline_max_ms / 1000)
        self._sizes = RowEstimate()
        depth = metrics.queue_depth.labels(*labels)
        sizes = metrics.batch_size.labels(*labels)
        waits = metrics.queue_wait.labels(*labels)

        def on_batch(rows: int, queued_s: list[float]) -> None:
            sizes.observe(rows)
            for wait in queued_s:
                waits.observe(wait)

        self.batcher = MicroBatcher(self._run, batching, on_batch=on_batch, on_depth=depth.set)

    @property
    def outputs(self) -> list[str]:
        """Outputs this version can give."""
        return available_outputs(self.runtime)

    def check_outputs(self, names: Sequence[str]) -> list[str]:
        """The requested outputs (``predict`` when none), each checked to exist."""
        return check_outputs(self.name, self.runtime, names)

    def admit(self, body_bytes: int | None) -> None:
        """Raise Overloaded when the queue has no room for a request of ``body_bytes`` (its
        Content-Length; None when not declared), before its body is read or decoded."""
        if self.retired:  # predicts outside the batcher: nothing to wait for
            return
        try:
            self.batcher.refuse_if_full(self._sizes.rows_of(body_bytes))
        except Overloaded:
            self._rejected["overloaded"].inc()
            raise
        if body_bytes is not None:
            self._sizes.record_bytes(body_bytes)

    async def predict(
        self, rows: CheckedRows, outputs: Sequence[str], *, route: str = ""
    ) -> Prediction:
        """Every requested output for ``rows``; raises InvalidInput naming the first row the
        checker rejected or the model refuses, Overloaded when the queue (or a blocking
        prediction log) is full, DeadlineExceeded when the request expired in the queue.

        Every protocol predicts through here, so this is where predictions are logged: one
        cheap item per request, queued before the response is sent.
        """
        started = time.perf_counter()
        wanted = tuple(outputs)
        if not rows.all_accepted:  # refused whole, naming its first row the model refuses too
            await self._services.executor.run(name_refused_rows, self.runtime, rows, wanted)
        self._sizes.record_rows(len(rows.batch))
        if rows.unknown_categories:
            self._count_unknown(rows.unknown_categories)
        try:
            if self.retired:  # taken just before it was retired: answered all the same
                results = await self._services.executor.run(
                    compute, self.runtime, rows.batch, wanted
                )
            else:
                results = await self.batcher.predict(rows.batch, wanted)
        except Overloaded:
            self._rejected["overloaded"].inc()
            raise
        except DeadlineExceeded:
            self._rejected["deadline"].inc()
            raise
        except ModelRefused as refused:  # which of this request's rows: the error path only
            await self._services.executor.run(
                name_refused_rows, self.runtime, rows, wanted, refused.reason
            )
            raise  # not reached: name_refused_rows always raises
        self._count(results)
        if self.shadow is not None:
            self.shadow.offer(rows, wanted, results, time.perf_counter() - started)
        logged = await self._log(rows, results, started, route)
        return Prediction(results, logged)

    async def predict_mirrored(
        self, requests: Sequence[tuple[str, CheckedRows]], outputs: tuple[str, ...]
    ) -> Outputs:
        """Outputs for the rows of several requests another version answered, stacked into one
        predict call (the shadow lane, `rollout.ShadowMirror`): each request is logged under its
        own request id with route `shadow`. Every request's rows were accepted already. Raises
        what ``predict`` raises; the caller then retries the requests one by one."""
        started = time.perf_counter()
        batch = stack([rows.batch for _, rows in requests])
        if self.retired:
            results = await self._services.executor.run(compute, self.runtime, batch, outputs)
        else:
            results = await self.batcher.predict(batch, outputs)
        self._count(results)
        offset = 0
        for request_id, rows in requests:
            end = offset + len(rows.batch)
            part = {name: values[offset:end] for name, values in results.items()}
            await self._log(rows, part, started, "shadow", request_id)
            offset = end
        return results

    async def retire(self) -> None:
        """Stop batching once the queued requests are answered. Requests that still hold this
        version predict with it directly; its memory goes with the last of them."""
        self.retired = True
        await self.batcher.close(drain=True)

    async def _run(self, batch: Batch, outputs: tuple[str, ...]) -> Outputs:
        """The batcher's call: inline when this size was measured fast, else in the pool."""
        rows = len(batch)
        if self._timing.is_fast(rows):
            started = time.perf_counter()
            results = compute(self.runtime, batch, outputs)
            self._timing.record(rows, time.perf_counter() - started)
            return results
        return await self._services.executor.run(timed, self._timing, self.runtime, batch, outputs)

    async def _log(
        self,
        rows: CheckedRows,
        results: Outputs,
        started: float,
        route: str,
        request_id: str | None = None,
    ) -> PendingPrediction | None:
        writer = self._services.prediction_log
        if writer is None:
            return None
        sampled = writer.is_sampled()
        if not sampled and self.cache is None:
            return None
        item = PendingPrediction(
            request_id=request_id or request_id_var.get() or new_request_id(),
            ts=time.time(),
            model=self.name,
            version=self.version,
            inputs=rows.batch,
            feature_names=self.schema.names,
            predictions=results.get(PREDICT),
            proba=results.get(PREDICT_PROBA),
            classes=self.class_labels,
            latency_ms=(time.perf_counter() - started) * 1000,
            unknown_categories=(
                {
                    feature: np.flatnonzero(mask).tolist()
                    for feature, mask in rows.unknown_categories.items()
                }
                if rows.unknown_categories
                else {}
            ),
            route=route,
        )
        if sampled and not writer.offer(item):  # full, in block mode: wait for room
            await self._services.wait_to_log(item)
        return item  # a cache keeps it, to log the requests it answers

    def _count_unknown(self, unknown: dict[str, np.ndarray]) -> None:
        metric = self._services.metrics.unknown_categories
        for feature, mask in unknown.items():
            metric.labels(self.name, self.version, feature).inc(int(mask.sum()))

    def _count(self, results: Outputs) -> None:
        predicted = results.get(PREDICT)
        self._rows.inc(
            len(predicted) if predicted is not None else len(next(iter(results.values())))
        )
        if predicted is None:
            return
        metric = self._services.metrics.predictions
        if not self.class_labels:  # regressors count under class '', as the metric documents
            metric.labels(self.name, self.version, "").inc(len(predicted))
            return
        if len(predicted) <= SMALL_BATCH_ROWS:
            counts = Counter(predicted.tolist())
        else:
            labels, totals = np.unique(predicted, return_counts=True)
            counts = Counter(dict(zip(labels.tolist(), totals.tolist(), strict=True)))
        for label, count in counts.items():
            child = self._class_counters.get(label)
            if child is None:
                child = self._class_counters[label] = metric.labels(
                    self.name, self.version, str(label)
                )
            child.inc(count)

    def __repr__(self) -> str:
        return f"ServedVersion({self.name}:{self.version})"


@dataclass(frozen=True, slots=True)
class VersionOptions:
    """What a version is built with besides its files, looked up by model name."""

    input_policy: InputPolicy
    batching: BatchingConfig
    cache: Callable[[str, str, str], ResponseCache] | None = field(default=None)
    """Builds the version's cache (model, version, artifact sha256), when the model has one."""


class VersionLoader:
    """Builds ServedVersions: locate and verify the files, load, probe, warm, then batch."""

    def __init__(
        self,
        *,
        store: RegistryStore | None,
        services: PredictionServices,
        options: Callable[[str], VersionOptions],
        safe_loading: bool,
    ) -> None:
        self._store = store
        self._services = services
        self._options = options
        self._safe = safe_loading

    async def load(self, source: ModelSource) -> ServedVersion:
        """A ready version; raises MlserveError (or anything a broken artifact raises) with the
        reason it cannot serve. Blocking work runs in worker threads, never on the event loop."""
        started = time.perf_counter()
        folder, sha = await asyncio.to_thread(self._locate, source)
        runtime = await asyncio.to_thread(
            load_runtime, folder, expected_sha256=sha, safe=self._safe
        )
        manifest = await asyncio.to_thread(read_manifest, folder)
        options = self._options(source.name)
        checker = await asyncio.to_thread(
            build_checker, runtime, manifest.reference_profile, options.input_policy
        )
        # Warm before anything can reach it: the first request is not the slow one, and a
        # model that cannot predict its own reference row never serves.
        batch = reference_batch(runtime.signature, manifest.reference_profile)
        executor = self._services.executor
        await executor.run(runtime.predict, batch)
        if runtime.has_proba:
            await executor.run(runtime.predict_proba, batch)
        served = ServedVersion(
            source,
            runtime,
            TabularSchema(checker),
            manifest.framework,
            manifest.reference_profile,
            self._services,
            options.batching,
            None
            if options.cache is None
            else options.cache(source.name, source.version, manifest.sha256),
        )
        served.load_s = time.perf_counter() - started
        return served

    def _locate(self, source: ModelSource) -> tuple[Path, str | None]:
        """A local folder and the sha256 the registry recorded (None for plain folders)."""
        if source.folder is not None:
            return source.folder, None
        if source.registered is None or self._store is None:
            raise ValueError(f"{source} has neither a folder nor a registry entry")
        return self._store.local_folder(source.registered), source.registered.sha256
