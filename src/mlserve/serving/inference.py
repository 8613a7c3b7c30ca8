"""What every served version predicts with: its outputs, the call off the loop (or inline, when
measured fast), and the services versions share (executor, metrics, prediction log)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from mlserve.errors import InvalidInput, ModelRefused, Overloaded
from mlserve.inputs import CheckedRows, predict_around_refusals, refusal_reason, rejection_text
from mlserve.logging import new_request_id, request_id_var
from mlserve.monitoring.metrics import ServingMetrics
from mlserve.monitoring.predlog import PendingPrediction, PredictionLogWriter
from mlserve.runtimes import Batch, Runtime
from mlserve.serving.executor import InferenceExecutor

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"


def available_outputs(runtime: Runtime) -> list[str]:
    """Outputs a model can give."""
    return [PREDICT, PREDICT_PROBA] if runtime.has_proba else [PREDICT]


def check_outputs(name: str, runtime: Runtime, names: Sequence[str]) -> list[str]:
    """The requested outputs of model ``name``, each checked to exist; every output the model
    declares when none is named (the Open Inference Protocol's rule)."""
    available = available_outputs(runtime)
    if not names:
        return list(available)
    for output in names:
        if output not in available:
            raise InvalidInput(
                f"unknown output {output!r} for model {name!r}; available: {', '.join(available)}"
            )
    return list(names)


def compute(runtime: Runtime, batch: Batch, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Runs in a worker thread: every requested output from one batch.

    Raises ModelRefused when the model refuses rows: the input checker let them through, but
    scikit-learn raises ValueError for values the model cannot take (an encoder that errors on
    an unknown category under unknown_categories: accept), the request's fault. Which rows, the
    caller finds with `name_refused_rows` on one request's rows: a batch of many requests is
    split back into its requests first.
    """
    try:
        return _outputs(runtime, batch, outputs)
    except ValueError as exc:
        raise ModelRefused(refusal_reason(exc)) from None


def name_refused_rows(
    runtime: Runtime, rows: CheckedRows, outputs: tuple[str, ...], reason: str | None = None
) -> NoReturn:
    """Runs in a worker thread, on one request refused as a whole: the checker rejected some of
    its rows, or the model refused its rows together (with ``reason``). Finds which of the rows
    the checker accepted the model refuses, as ``mlserve predict`` scores them, and raises
    InvalidInput naming the first rejected row of either kind and counting the others, as every
    door words it. The error path only: it costs a predict call of the accepted rows, and about
    2 * log2(rows) more per refused row (halving)."""
    reasons = dict(rows.reasons)
    accepted = rows.accepted_positions()
    refused: dict[int, str] = {}
    if reason is not None and len(accepted) == 1:
        refused = {0: reason}
    elif len(accepted):
        _, refused = predict_around_refusals(
            lambda part: _outputs(runtime, part, outputs),
            rows.accepted_batch(),
            known_to_fail=reason is not None,
        )
    for position, why in refused.items():
        reasons[int(accepted[position])] = why
    if reasons:
        raise InvalidInput(rejection_text(sorted(reasons.items())))
    # Each row alone is taken: the model refuses these rows together, not any one of them.
    raise InvalidInput(reason or "the model refused the rows together")


def _outputs(runtime: Runtime, batch: Batch, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    results: dict[str, np.ndarray] = {}
    if PREDICT in outputs and PREDICT_PROBA in outputs:
        results[PREDICT], results[PREDICT_PROBA] = runtime.predict_with_proba(batch)
    elif PREDICT in outputs:
        results[PREDICT] = runtime.predict(batch)
    elif PREDICT_PROBA in outputs:
        results[PREDICT_PROBA] = runtime.predict_proba(batch)
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


def timed(
    timing: PredictTiming, runtime: Runtime, batch: Batch, outputs: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """compute in a worker thread, measured."""
    started = time.perf_counter()
    results = compute(runtime, batch, outputs)
    timing.record(len(batch), time.perf_counter() - started)
    return results


@dataclass(frozen=True, slots=True)
class PredictionServices:
    """What every served version shares: where model code runs, metrics, the prediction log."""

    executor: InferenceExecutor
    metrics: ServingMetrics
    inline_max_ms: float = 0.0
    """Batch sizes measured to predict within this many ms run on the event loop."""
    prediction_log: PredictionLogWriter | None = None

    async def log(self, item: PendingPrediction) -> None:
        """Queue ``item`` in the prediction log, waiting for room when it is full (``block``);
        raises Overloaded when the wait outlasts the request."""
        writer = self.prediction_log
        if writer is None or writer.offer(item):
            return
        await self.wait_to_log(item)

    async def wait_to_log(self, item: PendingPrediction) -> None:
        """Queue ``item`` once the full prediction log has room (after ``offer`` said no);
        raises Overloaded when the wait outlasts the request."""
        writer = self.prediction_log
        assert writer is not None  # offered to it first
        try:
            await writer.put(item)
        except Overloaded:
            self.metrics.rejected.labels(item.model, item.version, "prediction_log").inc()
            raise

    async def replay(self, item: PendingPrediction) -> None:
        """Log a cached prediction again, for the request a cache hit answers (latency 0)."""
        writer = self.prediction_log
        if writer is None or not writer.is_sampled():
            return
        again = dataclasses.replace(
            item,
            request_id=request_id_var.get() or new_request_id(),
            ts=time.time(),
            latency_ms=0.0,
        )
        await self.log(again)
