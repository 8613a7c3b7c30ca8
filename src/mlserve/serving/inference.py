"""Run a prediction for any protocol: pick outputs, call the model off the loop, count results."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlserve.errors import DeadlineExceeded, InvalidInput, Overloaded
from mlserve.inputs import CheckedRows, refusal_reason
from mlserve.logging import new_request_id, request_id_var
from mlserve.monitoring.metrics import ServingMetrics
from mlserve.monitoring.predlog import PendingPrediction, PredictionLogWriter
from mlserve.runtimes import Batch, Runtime
from mlserve.serving.batching import BatchingConfig, MicroBatcher
from mlserve.serving.cache import logged_prediction
from mlserve.serving.executor import InferenceExecutor
from mlserve.serving.models import LoadedModel

CounterChild = Any
"""A labelled prometheus_client Counter (the library exposes no separate type for it)."""
_SMALL_BATCH_ROWS = 32

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"


def available_outputs(model: LoadedModel) -> list[str]:
    """Outputs this model can give."""
    assert model.runtime is not None
    return [PREDICT, PREDICT_PROBA] if model.runtime.has_proba else [PREDICT]


def check_outputs(model: LoadedModel, names: Sequence[str]) -> list[str]:
    """The requested outputs (``predict`` when none), each checked to exist."""
    if not names:
        return [PREDICT]
    available = available_outputs(model)
    for name in names:
        if name not in available:
            raise InvalidInput(
                f"unknown output {name!r} for model {model.name!r}; available: {', '.join(available)}"
            )
    return list(names)


def _compute(runtime: Runtime, batch: Batch, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Runs in a worker thread: every requested output from one batch.

    Raises InvalidInput when the model refuses the rows: the input checker let them through,
    but scikit-learn raises ValueError for values the model cannot take (an encoder that errors
    on an unknown category under unknown_categories: accept), the request's fault.
    """
    results: dict[str, np.ndarray] = {}
    try:
        if PREDICT in outputs and PREDICT_PROBA in outputs:
            results[PREDICT], results[PREDICT_PROBA] = runtime.predict_with_proba(batch)
        elif PREDICT in outputs:
            results[PREDICT] = runtime.predict(batch)
        elif PREDICT_PROBA in outputs:
            results[PREDICT_PROBA] = runtime.predict_proba(batch)
    except ValueError as exc:
        # One row: the reason is that row's, as batch jobs give it; more rows: the request's.
        prefix = "row 0: " if len(batch) == 1 else ""
        raise InvalidInput(f"{prefix}{refusal_reason(exc)}") from None
    return results


class PredictTiming:
    """Running estimates of how long predict calls take, by batch size, to decide where they run.

    Sizes are grouped in powers of two. A size group runs inline only after a few calls of that
    size were measured in the thread pool and their moving average is within the budget, so a
    slow model (or a big batch of a fast one) never blocks the event loop for long.
    """

    MAX_INLINE_ROWS = 4096
    _WARMUP_CALLS = 3
    _SMOOTHING = 0.1

    def __init__(self, budget_s: float) -> None:
        self._budget_s = budget_s
        self._estimate_s: dict[int, float] = {}
        self._calls: dict[int, int] = {}

    def is_fast(self, rows: int) -> bool:
        """True when a batch of ``rows`` is expected to finish within the budget."""
        if self._budget_s <= 0 or rows > self.MAX_INLINE_ROWS:
            return False
        group = rows.bit_length()
        return (
            self._calls.get(group, 0) >= self._WARMUP_CALLS
            and self._estimate_s[group] <= self._budget_s
        )

    def record(self, rows: int, seconds: float) -> None:
        """Fold one measured call into its size group's moving average."""
        if rows > self.MAX_INLINE_ROWS:
            return
        group = rows.bit_length()
        calls = self._calls.get(group, 0) + 1
        self._calls[group] = calls
        previous = self._estimate_s.get(group, seconds)
        self._estimate_s[group] = previous + self._SMOOTHING * (seconds - previous)


def _timed(
    timing: PredictTiming, runtime: Runtime, batch: Batch, outputs: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """_compute in a worker thread, measured."""
    started = time.perf_counter()
    results = _compute(runtime, batch, outputs)
    timing.record(len(batch), time.perf_counter() - started)
    return results


class Predictor:
    """Predicts with a loaded model, through its micro-batcher, and records what it predicted."""

    def __init__(
        self,
        executor: InferenceExecutor,
        metrics: ServingMetrics,
        inline_max_ms: float = 0.0,
        prediction_log: PredictionLogWriter | None = None,
    ) -> None:
        self._executor = executor
        self._metrics = metrics
        self._inline_max_s = inline_max_ms / 1000
        # Metric children by labels, looked up once: .labels() takes a lock and builds a key.
        self._row_counters: dict[tuple[str, str], CounterChild] = {}
        self._class_counters: dict[tuple[str, str], dict[object, CounterChild]] = {}
        self._log = prediction_log

    def batcher_for(self, model: LoadedModel, config: BatchingConfig) -> MicroBatcher:
        """A micro-batcher that runs ``model`` and reports to the metrics.

        Calls go to the thread pool, except batches of a size the model was measured to answer
        within ``inline_max_ms``: those run on the event loop, because handing work to a thread
        and back costs about 0.1 ms on a busy core, more than such a predict itself.
        """
        runtime = model.runtime
        assert runtime is not None
        labels = (model.name, model.version)
        depth = self._metrics.queue_depth.labels(*labels)
        sizes = self._metrics.batch_size.labels(*labels)
        waits = self._metrics.queue_wait.labels(*labels)
        timing = PredictTiming(self._inline_max_s)

        async def compute(batch: Batch, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
            rows = len(batch)
            if timing.is_fast(rows):
                started = time.perf_counter()
                results = _compute(runtime, batch, outputs)
                timing.record(rows, time.perf_counter() - started)
                return results
            return await self._executor.run(_timed, timing, runtime, batch, outputs)

        def on_batch(rows: int, queued_s: list[float]) -> None:
            sizes.observe(rows)
            for wait in queued_s:
                waits.observe(wait)

        return MicroBatcher(compute, config, on_batch=on_batch, on_depth=depth.set)

    async def predict(
        self, model: LoadedModel, rows: CheckedRows, outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Every requested output for the accepted ``rows``; raises InvalidInput for rows the
        model rejects, Overloaded when the model's queue (or a blocking prediction log) is
        full, DeadlineExceeded when the request expired.

        Every protocol predicts through here, so this is where predictions are logged: one
        cheap item per request, queued before the response is sent.
        """
        assert model.runtime is not None
        started = time.perf_counter()
        batch = rows.batch
        if rows.unknown_categories:
            self._count_unknown(model, rows.unknown_categories)
        wanted = tuple(outputs)
        try:
            if model.batcher is not None:
                results = await model.batcher.predict(batch, wanted)
            else:
                results = await self._executor.run(_compute, model.runtime, batch, wanted)
        except Overloaded:
            self._metrics.rejected.labels(model.name, model.version, "overloaded").inc()
            raise
        except DeadlineExceeded:
            self._metrics.rejected.labels(model.name, model.version, "deadline").inc()
            raise
        self._count(model, results)
        if self._log is not None:
            await self._record(self._log, model, rows, results, started)
        return results

    def _count_unknown(self, model: LoadedModel, unknown: dict[str, np.ndarray]) -> None:
        for feature, mask in unknown.items():
            counter = self._metrics.unknown_categories.labels(model.name, model.version, feature)
            counter.inc(int(mask.sum()))

    async def _record(
        self,
        writer: PredictionLogWriter,
        model: LoadedModel,
        rows: CheckedRows,
        results: dict[str, np.ndarray],
        started: float,
    ) -> None:
        sampled = writer.is_sampled()
        if not sampled and model.cache is None:
            return
        assert model.schema is not None
        item = PendingPrediction(
            request_id=request_id_var.get() or new_request_id(),
            ts=time.time(),
            model=model.name,
            version=model.version,
            inputs=rows.batch,
            feature_names=model.schema.names,
            unknown_categories={
                feature: np.flatnonzero(mask).tolist()
                for feature, mask in rows.unknown_categories.items()
            },
            predictions=results.get(PREDICT),
            proba=results.get(PREDICT_PROBA),
            classes=model.class_labels,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
        if model.cache is not None:
            logged_prediction.set(item)  # kept with the cached response, logged on each hit
        if sampled:
            await self._enqueue(writer, item)

    async def replay(self, item: PendingPrediction) -> None:
        """Log a cached prediction again, for the request a cache hit answers (latency 0)."""
        writer = self._log
        if writer is None or not writer.is_sampled():
            return
        again = dataclasses.replace(
            item,
            request_id=request_id_var.get() or new_request_id(),
            ts=time.time(),
            latency_ms=0.0,
        )
        await self._enqueue(writer, again)

    async def _enqueue(self, writer: PredictionLogWriter, item: PendingPrediction) -> None:
        if writer.offer(item):
            return
        try:
            await writer.put(item)
        except Overloaded:
            self._metrics.rejected.labels(item.model, item.version, "prediction_log").inc()
            raise

    def _count(self, model: LoadedModel, results: dict[str, np.ndarray]) -> None:
        predicted = results.get(PREDICT)
        rows = len(predicted) if predicted is not None else len(next(iter(results.values())))
        key = (model.name, model.version)
        counter = self._row_counters.get(key)
        if counter is None:
            counter = self._row_counters[key] = self._metrics.rows.labels(*key)
        counter.inc(rows)
        if predicted is None:
            return
        if not model.class_labels:  # regressors count under class '', as the metric documents
            self._metrics.predictions.labels(model.name, model.version, "").inc(len(predicted))
            return
        if len(predicted) <= _SMALL_BATCH_ROWS:  # np.unique costs more than counting a few rows
            counts = Counter(predicted.tolist())
        else:
            labels, totals = np.unique(predicted, return_counts=True)
            counts = Counter(dict(zip(labels.tolist(), totals.tolist(), strict=True)))
        children = self._class_counters.setdefault((model.name, model.version), {})
        for label, count in counts.items():
            child = children.get(label)
            if child is None:
                child = self._metrics.predictions.labels(model.name, model.version, str(label))
                children[label] = child
            child.inc(count)
