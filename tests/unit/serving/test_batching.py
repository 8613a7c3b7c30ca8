"""MicroBatcher, PredictTiming and Predictor: batched answers equal unbatched ones, and overload
is refused at once rather than computed late.

The batcher's compute function is its edge (it hands rows to the model), so most tests give it
a fake one that records every call. Each row carries its own id in column 0, which tells which
request every computed row belongs to.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from mlserve.errors import DeadlineExceeded, InvalidInput, Overloaded
from mlserve.inputs import InputPolicy, build_checker
from mlserve.monitoring.metrics import ServingMetrics
from mlserve.runtimes import Batch, load_runtime
from mlserve.serving.batching import BatchingConfig, MicroBatcher, Outputs
from mlserve.serving.executor import InferenceExecutor
from mlserve.serving.inference import PREDICT, PREDICT_PROBA, PredictionServices, PredictTiming
from mlserve.serving.served import ModelSource, ServedVersion
from mlserve.serving.tabular import TabularSchema

Kind = Literal["float64", "float32", "frame"]
ROW_ID_STRIDE = 1000
"""Row ids are request * ROW_ID_STRIDE + row: requests hold fewer rows than this."""
PROMPTLY_S = 2.0
"""A behavioural bound, not a benchmark: 'did not wait for max_wait_ms (10 s)'."""

OUTPUT_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    PREDICT: lambda rows: rows.sum(axis=1),
    PREDICT_PROBA: lambda rows: np.column_stack([rows[:, 0] * 0.5, rows[:, 1:].max(axis=1)]),
}
"""Row-wise outputs of the fake model: any row's result depends on that row only."""


def as_matrix(batch: Batch) -> np.ndarray:
    """The rows of an array or a frame as a float64 matrix."""
    if isinstance(batch, pd.DataFrame):
        return batch.to_numpy(dtype=np.float64)
    return np.asarray(batch, dtype=np.float64)


@dataclass
class Call:
    """One compute call: which rows (by id) and which outputs."""

    row_ids: list[int]
    outputs: tuple[str, ...]

    @property
    def requests(self) -> list[int]:
        """The requests whose rows this call computed, in row order."""
        seen: list[int] = []
        for row_id in self.row_ids:
            if not seen or seen[-1] != row_id // ROW_ID_STRIDE:
                seen.append(row_id // ROW_ID_STRIDE)
        return seen


@dataclass
class FakeModel:
    """A compute function that records each stacked batch and answers row-wise outputs.

    ``gate``, when set, holds every call until it opens; ``started`` is set once a call began.
    Rows holding a NaN fail the whole call, as a model rejecting an input would.
    """

    gate: asyncio.Event | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[Call] = field(default_factory=list)

    async def __call__(self, batch: Batch, outputs: tuple[str, ...]) -> Outputs:
        rows = as_matrix(batch)
        self.calls.append(Call([int(i) for i in np.nan_to_num(rows[:, 0], nan=-1)], outputs))
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)  # like a thread hand-off: requests may arrive meanwhile
        if np.isnan(rows).any():
            raise InvalidInput("the model rejected the input: NaN")
        return {name: OUTPUT_FUNCTIONS[name](rows) for name in outputs}

    @property
    def computed_ids(self) -> set[int]:
        """Every row id any call received."""
        return {row_id for call in self.calls for row_id in call.row_ids}


def request_rows(request: int, rows: int, kind: Kind = "float64") -> Batch:
    """``rows`` rows for request number ``request``: its row ids, then small whole numbers."""
    ids = np.arange(rows, dtype=np.float64) + request * ROW_ID_STRIDE
    values = np.column_stack([ids, (ids % 7) - 3, (ids * 3) % 11])
    if kind == "frame":
        return pd.DataFrame(values, columns=["row_id", "a", "b"])
    return values.astype(kind)


def expected_outputs(batch: Batch, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """What the fake model answers for these rows alone (unbatched)."""
    rows = as_matrix(batch)
    return {name: OUTPUT_FUNCTIONS[name](rows) for name in outputs}


def run(coroutine: Awaitable[Any]) -> Any:
    """Run one scenario on a fresh event loop."""

    async def main() -> Any:
        return await coroutine

    return asyncio.run(main())


# -- the property: batched equals unbatched --------------------------------------------------------


@dataclass(frozen=True)
class RequestSpec:
    """One request of a generated scenario."""

    rows: int
    outputs: tuple[str, ...]
    kind: Kind
    ticks: int
    """Event-loop turns before it arrives, so some arrive while a batch is computing."""


output_selections = st.sampled_from(
    [(PREDICT,), (PREDICT_PROBA,), (PREDICT, PREDICT_PROBA), (PREDICT_PROBA, PREDICT)]
)
request_specs = st.builds(
    RequestSpec,
    rows=st.integers(1, 20),
    outputs=output_selections,
    kind=st.sampled_from(["float64", "float32", "frame"]),
    ticks=st.integers(0, 3),
)


async def run_concurrently(
    specs: list[RequestSpec], config: BatchingConfig
) -> tuple[FakeModel, list[int], list[Outputs]]:
    """Submit every request concurrently; return the model, the arrival order and the answers."""
    model = FakeModel()
    batcher = MicroBatcher(model, config)
    arrivals: list[int] = []

    async def submit(index: int, spec: RequestSpec) -> Outputs:
        for _ in range(spec.ticks):
            await asyncio.sleep(0)
        # predict enqueues before it first awaits, so this records the queue order
        arrivals.append(index)
        return await batcher.predict(request_rows(index, spec.rows, spec.kind), spec.outputs)

    answers = await asyncio.gather(*(submit(i, s) for i, s in enumerate(specs)))
    await batcher.close()
    return model, arrivals, list(answers)


@settings(max_examples=60, deadline=None)
@given(
    specs=st.lists(request_specs, min_size=1, max_size=25),
    max_batch_size=st.integers(1, 48),
    max_batch_rows=st.integers(1, 96),
    max_wait_ms=st.sampled_from([0.0, 1.0]),
)
def test_batched_answers_equal_unbatched_ones_in_fifo_order(
    specs: list[RequestSpec], max_batch_size: int, max_batch_rows: int, max_wait_ms: float
) -> None:
    config = BatchingConfig(
        max_batch_size=max_batch_size, max_batch_rows=max_batch_rows, max_wait_ms=max_wait_ms
    )
    model, arrivals, answers = run(run_concurrently(specs, config))

    for index, (spec, answer) in enumerate(zip(specs, answers, strict=True)):
        assert list(answer) == list(spec.outputs), index
        expected = expected_outputs(request_rows(index, spec.rows, spec.kind), spec.outputs)
        for name, values in expected.items():
            np.testing.assert_array_equal(answer[name], values, err_msg=f"{index} {name}")
    # every row computed exactly once, batches taken first in, first out
    computed = [row_id for call in model.calls for row_id in call.row_ids]
    assert sorted(computed) == sorted(
        i * ROW_ID_STRIDE + r for i, spec in enumerate(specs) for r in range(spec.rows)
    )
    assert [r for call in model.calls for r in call.requests] == arrivals
    for call in model.calls:
        cap = max(max_batch_size, max_batch_rows)
        assert len(call.row_ids) <= cap or len(call.requests) == 1
        wanted = {name for r in call.requests for name in specs[r].outputs}
        assert set(call.outputs) == wanted


def test_concurrent_requests_share_one_predict_call() -> None:
    specs = [RequestSpec(rows=2, outputs=(PREDICT,), kind="float64", ticks=0)] * 5
    model, _arrivals, _answers = run(run_concurrently(specs, BatchingConfig(max_batch_size=64)))
    assert [call.requests for call in model.calls] == [[0, 1, 2, 3, 4]]


def test_requests_with_different_input_shapes_are_not_stacked() -> None:
    specs = [
        RequestSpec(rows=2, outputs=(PREDICT,), kind="float64", ticks=0),
        RequestSpec(rows=2, outputs=(PREDICT,), kind="frame", ticks=0),
        RequestSpec(rows=2, outputs=(PREDICT,), kind="frame", ticks=0),
        RequestSpec(rows=2, outputs=(PREDICT,), kind="float32", ticks=0),
    ]
    model, _arrivals, _answers = run(run_concurrently(specs, BatchingConfig()))
    assert [call.requests for call in model.calls] == [[0], [1, 2], [3]]


def test_max_batch_rows_splits_batches_but_never_a_request() -> None:
    async def scenario() -> FakeModel:
        model = FakeModel()
        config = BatchingConfig(max_batch_size=7, max_batch_rows=7, max_wait_ms=0)
        batcher = MicroBatcher(model, config)
        sizes = [3, 3, 3, 12, 2, 5]
        await asyncio.gather(
            *(batcher.predict(request_rows(i, n), (PREDICT,)) for i, n in enumerate(sizes))
        )
        await batcher.close()
        return model

    model = run(scenario())
    assert [call.requests for call in model.calls] == [[0, 1], [2], [3], [4, 5]]


def test_requests_larger_than_max_batch_size_share_calls_up_to_max_batch_rows() -> None:
    async def scenario() -> FakeModel:
        model = FakeModel(gate=asyncio.Event())
        config = BatchingConfig(max_batch_size=4, max_batch_rows=25, max_wait_ms=10_000)
        batcher = MicroBatcher(model, config)
        first = asyncio.ensure_future(batcher.predict(request_rows(0, 10), (PREDICT,)))
        await model.started.wait()
        # queued while the first computes: each alone exceeds max_batch_size
        rest = [
            asyncio.ensure_future(batcher.predict(request_rows(i, 10), (PREDICT,)))
            for i in (1, 2, 3, 4)
        ]
        assert model.gate is not None
        model.gate.set()
        await asyncio.wait_for(asyncio.gather(first, *rest), PROMPTLY_S)
        await batcher.close()
        return model

    model = run(scenario())
    assert [call.requests for call in model.calls] == [[0], [1, 2], [3, 4]]


# -- no waiting at low load ----------------------------------------------------------------------


def test_a_lone_request_runs_at_once_without_waiting_for_company() -> None:
    async def scenario() -> list[Outputs]:
        batcher = MicroBatcher(FakeModel(), BatchingConfig(max_wait_ms=10_000))
        answers = []
        for index in range(2):  # the second one arrives after the first batch finished
            answers.append(
                await asyncio.wait_for(
                    batcher.predict(request_rows(index, 3), (PREDICT,)), PROMPTLY_S
                )
            )
        await batcher.close()
        return answers

    answers = run(scenario())
    np.testing.assert_array_equal(
        answers[1][PREDICT], expected_outputs(request_rows(1, 3), (PREDICT,))[PREDICT]
    )


def test_a_full_batch_runs_without_waiting_for_max_wait() -> None:
    async def scenario() -> FakeModel:
        model = FakeModel(gate=asyncio.Event())
        batcher = MicroBatcher(model, BatchingConfig(max_batch_size=4, max_wait_ms=10_000))
        first = asyncio.ensure_future(batcher.predict(request_rows(0, 1), (PREDICT,)))
        await model.started.wait()
        # these queue while the first computes, and fill the next batch to max_batch_size
        rest = [
            asyncio.ensure_future(batcher.predict(request_rows(i, 2), (PREDICT,))) for i in (1, 2)
        ]
        assert model.gate is not None
        model.gate.set()
        await asyncio.wait_for(asyncio.gather(first, *rest), PROMPTLY_S)
        await batcher.close()
        return model

    model = run(scenario())
    assert [call.requests for call in model.calls] == [[0], [1, 2]]


# -- safe overload -------------------------------------------------------------------------------


def test_a_full_queue_refuses_at_once_and_recovers() -> None:
    async def scenario() -> None:
        model = FakeModel(gate=asyncio.Event())
        batcher = MicroBatcher(model, BatchingConfig(max_queue_rows=5, max_wait_ms=0))
        running = asyncio.ensure_future(batcher.predict(request_rows(0, 2), (PREDICT,)))
        await model.started.wait()
        queued = [
            asyncio.ensure_future(batcher.predict(request_rows(i, n), (PREDICT,)))
            for i, n in ((1, 3), (2, 2))
        ]
        await asyncio.sleep(0)
        assert batcher.queued_rows == 5
        # refused while the model is still busy: nothing had to finish first
        with pytest.raises(Overloaded) as refused:
            await batcher.predict(request_rows(3, 1), (PREDICT,))
        assert refused.value.retry_after_s > 0
        assert batcher.stats.rejected == 1
        assert not running.done()

        assert model.gate is not None
        model.gate.set()
        await asyncio.gather(running, *queued)
        assert 3 * ROW_ID_STRIDE not in model.computed_ids
        recovered = await batcher.predict(request_rows(4, 1), (PREDICT,))
        np.testing.assert_array_equal(
            recovered[PREDICT], expected_outputs(request_rows(4, 1), (PREDICT,))[PREDICT]
        )
        await batcher.close()

    run(scenario())


def test_a_queue_of_many_one_row_requests_refuses_past_its_request_limit() -> None:
    async def scenario() -> None:
        model = FakeModel(gate=asyncio.Event())
        config = BatchingConfig(max_queue_rows=1000, max_queue_requests=3, max_wait_ms=0)
        batcher = MicroBatcher(model, config)
        running = asyncio.ensure_future(batcher.predict(request_rows(0, 1), (PREDICT,)))
        await model.started.wait()
        queued = [
            asyncio.ensure_future(batcher.predict(request_rows(i, 1), (PREDICT,)))
            for i in range(1, 4)
        ]
        await asyncio.sleep(0)
        assert batcher.queued_rows == 3  # far below the row limit
        with pytest.raises(Overloaded, match="3 requests"):
            batcher.refuse_if_full(1)
        with pytest.raises(Overloaded):
            await batcher.predict(request_rows(9, 1), (PREDICT,))
        assert batcher.stats.rejected == 2

        assert model.gate is not None
        model.gate.set()
        await asyncio.gather(running, *queued)
        assert 9 * ROW_ID_STRIDE not in model.computed_ids
        batcher.refuse_if_full(1)  # room again once the queue drained
        await batcher.close()

    run(scenario())


def test_a_request_larger_than_the_queue_limit_runs_when_the_queue_is_empty() -> None:
    async def scenario() -> Outputs:
        batcher = MicroBatcher(FakeModel(), BatchingConfig(max_queue_rows=5))
        answer = await batcher.predict(request_rows(0, 8), (PREDICT,))
        await batcher.close()
        return answer

    assert len(run(scenario())[PREDICT]) == 8


def test_a_request_expiring_in_the_queue_gets_deadline_exceeded_and_is_never_computed() -> None:
    async def scenario() -> None:
        model = FakeModel(gate=asyncio.Event())
        batcher = MicroBatcher(model, BatchingConfig(max_wait_ms=0, timeout_s=0.05))
        running = asyncio.ensure_future(batcher.predict(request_rows(0, 1), (PREDICT,)))
        await model.started.wait()
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(batcher.predict(request_rows(1, 2), (PREDICT,)), PROMPTLY_S)
        assert batcher.stats.expired == 1

        assert model.gate is not None
        model.gate.set()
        await running
        after = await batcher.predict(request_rows(2, 1), (PREDICT,))
        assert len(after[PREDICT]) == 1
        assert batcher.queued_rows == 0  # the expired request left the queue
        assert not {ROW_ID_STRIDE, ROW_ID_STRIDE + 1} & model.computed_ids
        assert [call.requests for call in model.calls] == [[0], [2]]
        await batcher.close()

    run(scenario())


def test_a_request_whose_predict_started_before_its_deadline_gets_its_answer() -> None:
    """Past the deadline, a computing request is answered: a 504 would waste the computation."""

    async def scenario() -> Outputs:
        model = FakeModel(gate=asyncio.Event())
        batcher = MicroBatcher(model, BatchingConfig(timeout_s=0.05))
        running = asyncio.ensure_future(batcher.predict(request_rows(0, 2), (PREDICT,)))
        await model.started.wait()
        await asyncio.sleep(0.15)  # the deadline passes while the model computes
        assert model.gate is not None
        model.gate.set()
        answer: Outputs = await asyncio.wait_for(running, PROMPTLY_S)
        assert batcher.stats.expired == 0
        await batcher.close()
        return answer

    answer = run(scenario())
    np.testing.assert_array_equal(
        answer[PREDICT], expected_outputs(request_rows(0, 2), (PREDICT,))[PREDICT]
    )


def test_a_failing_batch_is_retried_per_request_so_only_the_bad_one_fails() -> None:
    async def scenario() -> tuple[FakeModel, list[Any]]:
        model = FakeModel()
        batcher = MicroBatcher(model, BatchingConfig(max_wait_ms=0))
        poisoned = request_rows(1, 2)
        assert isinstance(poisoned, np.ndarray)
        poisoned[1, 2] = np.nan
        batches = [request_rows(0, 3), poisoned, request_rows(2, 1)]
        answers = await asyncio.gather(
            *(batcher.predict(b, (PREDICT, PREDICT_PROBA)) for b in batches),
            return_exceptions=True,
        )
        await batcher.close()
        return model, list(answers)

    model, answers = run(scenario())
    assert isinstance(answers[1], InvalidInput)
    for index, rows in ((0, 3), (2, 1)):
        expected = expected_outputs(request_rows(index, rows), (PREDICT, PREDICT_PROBA))
        for name, values in expected.items():
            np.testing.assert_array_equal(answers[index][name], values)
    assert [call.requests for call in model.calls] == [[0, 1, 2], [0], [1], [2]]


# -- PredictTiming --------------------------------------------------------------------------------

BUDGET_S = 0.0005
FAST_S = 0.0001


def test_timing_inlines_a_size_only_after_warm_up_calls_within_budget() -> None:
    timing = PredictTiming(BUDGET_S)
    assert not timing.is_fast(1)
    for _ in range(2):
        timing.record(1, FAST_S)
        assert not timing.is_fast(1)
    timing.record(1, FAST_S)
    assert timing.is_fast(1)


def test_timing_is_kept_per_size_group_of_powers_of_two() -> None:
    timing = PredictTiming(BUDGET_S)
    for rows in (4, 5, 7):  # one group: 4..7 rows
        timing.record(rows, FAST_S)
    assert timing.is_fast(6)
    assert not timing.is_fast(3)
    assert not timing.is_fast(8)


def test_timing_keeps_slow_sizes_off_the_event_loop() -> None:
    timing = PredictTiming(BUDGET_S)
    for _ in range(5):
        timing.record(16, 0.01)
    assert not timing.is_fast(16)
    for _ in range(5):
        timing.record(2, FAST_S)
    timing.record(2, 0.05)  # one slow call moves the average past the budget
    assert not timing.is_fast(2)


def test_timing_never_inlines_with_no_budget_or_huge_batches() -> None:
    off = PredictTiming(0.0)
    for _ in range(5):
        off.record(1, FAST_S)
    assert not off.is_fast(1)
    timing = PredictTiming(BUDGET_S)
    huge = PredictTiming.MAX_INLINE_ROWS + 1
    for _ in range(5):
        timing.record(huge, FAST_S)
    assert not timing.is_fast(huge)


# -- Predictor with a real model -----------------------------------------------------------------


@dataclass
class PredictorSetup:
    """A served iris version (a real runtime) with its thread pool and fresh metrics."""

    model: ServedVersion
    executor: InferenceExecutor
    registry: CollectorRegistry

    def value(self, name: str, **labels: str) -> float:
        """A metric sample of the iris model (0 when absent)."""
        sample = self.registry.get_sample_value(name, {"model": "iris", "version": "1", **labels})
        return sample or 0.0

    async def predict(self, rows: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """The version's outputs for ``rows``, checked as every protocol hands them over."""
        checked = self.model.schema.checker.check_matrix(np.asarray(rows, dtype=np.float64))
        return (await self.model.predict(checked, outputs)).outputs


def predictor_setup(folder: Path, config: BatchingConfig, inline_max_ms: float) -> PredictorSetup:
    """Load ``folder`` as iris version 1, with its micro-batcher."""
    runtime = load_runtime(folder)
    registry = CollectorRegistry()
    executor = InferenceExecutor(2)
    services = PredictionServices(
        executor, ServingMetrics.create(registry), inline_max_ms=inline_max_ms
    )
    model = ServedVersion(
        ModelSource("iris", "1", folder=folder),
        runtime,
        TabularSchema(build_checker(runtime, None, InputPolicy())),
        "sklearn",
        None,
        services,
        config,
        None,
    )
    return PredictorSetup(model, executor, registry)


def test_predictor_batches_real_predictions_and_measures_them(
    version_folder: Path, iris_features: pd.DataFrame
) -> None:
    setup = predictor_setup(version_folder, BatchingConfig(max_wait_ms=1), inline_max_ms=0)
    runtime = setup.model.runtime
    slices = [iris_features.iloc[i : i + 1 + i % 4].to_numpy() for i in range(0, 24, 2)]
    selections = [(PREDICT,), (PREDICT_PROBA,), (PREDICT, PREDICT_PROBA)]

    async def scenario() -> list[dict[str, np.ndarray]]:
        answers = await asyncio.gather(
            *(setup.predict(rows, selections[i % 3]) for i, rows in enumerate(slices))
        )
        await setup.model.batcher.close()
        return list(answers)

    try:
        answers = run(scenario())
    finally:
        setup.executor.shutdown()
    for index, (rows, answer) in enumerate(zip(slices, answers, strict=True)):
        assert list(answer) == list(selections[index % 3])
        if PREDICT in answer:
            assert answer[PREDICT].tolist() == runtime.predict(rows).tolist()
        if PREDICT_PROBA in answer:
            np.testing.assert_allclose(
                answer[PREDICT_PROBA], runtime.predict_proba(rows), rtol=1e-12, atol=1e-15
            )
    total_rows = sum(len(rows) for rows in slices)
    assert setup.value("mlserve_rows_total") == total_rows
    assert setup.value("mlserve_batch_size_sum") == total_rows
    assert setup.value("mlserve_batch_size_count") < len(slices)  # some calls were shared
    assert setup.value("mlserve_queue_wait_seconds_count") == len(slices)
    assert setup.value("mlserve_queue_depth") == 0


def test_predictor_counts_rejections_by_reason(
    version_folder: Path, iris_features: pd.DataFrame
) -> None:
    config = BatchingConfig(max_queue_rows=2, max_wait_ms=0, timeout_s=0.05)
    setup = predictor_setup(version_folder, config, inline_max_ms=0)
    rows = iris_features.to_numpy()[:2]
    pool_busy = threading.Event()

    async def scenario() -> list[Any]:
        # occupy both pool threads, so the first predict call waits in the pool meanwhile
        held = [
            asyncio.ensure_future(setup.executor.run(pool_busy.wait, PROMPTLY_S)) for _ in range(2)
        ]
        first = asyncio.ensure_future(setup.predict(rows, [PREDICT]))
        await asyncio.sleep(0.01)  # the first call left the queue and waits for a pool thread
        assert setup.model.batcher.queued_rows == 0
        assert not first.done()
        results = await asyncio.gather(
            setup.predict(rows, [PREDICT]),  # queued, then expires
            setup.predict(rows, [PREDICT]),  # refused: queue full
            return_exceptions=True,
        )
        pool_busy.set()
        await asyncio.gather(*held)
        results.append(await first)
        await setup.model.batcher.close()
        return results

    try:
        expired, refused, first = run(scenario())
    finally:
        setup.executor.shutdown()
    assert isinstance(expired, DeadlineExceeded)
    assert isinstance(refused, Overloaded)
    assert len(first[PREDICT]) == 2
    assert setup.value("mlserve_rejected_requests_total", reason="overloaded") == 1
    assert setup.value("mlserve_rejected_requests_total", reason="deadline") == 1
    assert setup.value("mlserve_rows_total") == 2


def test_predictor_runs_warmed_up_fast_sizes_on_the_event_loop(
    version_folder: Path, iris_features: pd.DataFrame
) -> None:
    """Once a size is measured fast, it no longer needs the thread pool; other sizes still do."""
    setup = predictor_setup(version_folder, BatchingConfig(), inline_max_ms=1000)
    one_row = iris_features.to_numpy()[:1]
    eight_rows = iris_features.to_numpy()[:8]

    async def scenario() -> None:
        for _ in range(3):  # warm-up: measured in the pool
            await setup.predict(one_row, [PREDICT])
        setup.executor.shutdown()  # from now on only inline calls can succeed
        answer = await setup.predict(one_row, [PREDICT])
        assert len(answer[PREDICT]) == 1
        with pytest.raises(RuntimeError, match="shutdown"):
            await setup.predict(eight_rows, [PREDICT])
        await setup.model.batcher.close()

    run(scenario())
