"""PredictionLogWriter against real SQLite files: batching, redaction, sampling, retention,
backpressure, dropping, flush and close, and surviving a database that refuses writes."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from mlserve.errors import Overloaded
from mlserve.monitoring.metrics import MonitoringMetrics
from mlserve.monitoring.predlog import (
    LoggedRequest,
    PendingPrediction,
    PredictionLogStore,
    PredictionLogWriter,
    PredictionRecord,
    WriterConfig,
)

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
WAIT_S = 30.0


class BatchRecordingStore(PredictionLogStore):
    """The real store, remembering how many requests and rows each write carried."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.batches: list[int] = []
        self.requests_per_batch: list[int] = []

    def write_requests(self, requests: Sequence[LoggedRequest]) -> None:
        """Write, then remember the batch size in rows and in requests."""
        super().write_requests(requests)
        self.batches.append(sum(r.rows for r in requests))
        self.requests_per_batch.append(len(requests))


def pending(
    request_id: str, rows: int = 1, *, model: str = "iris", version: str = "1", seed: int = 0
) -> PendingPrediction:
    """A request of ``rows`` iris rows predicted as setosa."""
    matrix = np.random.default_rng(seed).uniform(0, 8, size=(rows, len(FEATURES))).round(2)
    return PendingPrediction(
        request_id=request_id,
        ts=time.time(),
        model=model,
        version=version,
        inputs=matrix,
        feature_names=FEATURES,
        predictions=np.asarray(["setosa"] * rows, dtype=object),
        proba=None,
        classes=["setosa", "versicolor"],
        latency_ms=0.5,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BatchRecordingStore]:
    """A store on a fresh SQLite file (short busy timeout, so a held lock fails fast)."""
    opened = BatchRecordingStore(f"sqlite:///{tmp_path / 'predictions.db'}", busy_timeout_s=0.05)
    yield opened
    opened.close()


@pytest.fixture
def metrics() -> MonitoringMetrics:
    """Instruments on a fresh registry."""
    return MonitoringMetrics.create(CollectorRegistry())


def sample(metrics: MonitoringMetrics, name: str, **labels: str) -> float:
    """The value of one instrument's sample (0 when absent)."""
    instrument = getattr(metrics, name)
    for family in instrument.collect():
        for s in family.samples:
            if s.name.endswith(("_total", "_depth")) and all(
                s.labels.get(k) == v for k, v in labels.items()
            ):
                return float(s.value)
    return 0.0


def wait_until(condition: Any, timeout_s: float = WAIT_S) -> None:
    """Poll ``condition`` until true or fail."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def test_rows_are_written_in_batches_of_at_most_batch_rows(
    store: BatchRecordingStore, metrics: MonitoringMetrics
) -> None:
    writer = PredictionLogWriter(store, WriterConfig(batch_rows=10), metrics)
    for i in range(30):
        assert writer.offer(pending(f"r{i}", rows=3, seed=i))
    writer.start()
    assert writer.flush(WAIT_S)
    writer.close()
    assert store.count() == 90
    assert max(store.batches) <= 10
    assert sum(store.batches) == 90
    assert len(store.batches) < 30  # requests were grouped, not written one by one
    assert sum(store.requests_per_batch) == 30  # one database row per request
    assert sample(metrics, "log_written", model="iris", version="1") == 90


def test_each_row_is_one_record_with_its_inputs_prediction_and_request(
    store: BatchRecordingStore, metrics: MonitoringMetrics
) -> None:
    writer = PredictionLogWriter(store, WriterConfig(), metrics)
    writer.start()
    item = pending("req-1", rows=3)
    writer.offer(item)
    frame = pd.DataFrame(
        {"plan": ["pro", None], "monthly": [10.5, np.nan]}, columns=["plan", "monthly"]
    )
    writer.offer(
        PendingPrediction(
            request_id="req-2",
            ts=time.time(),
            model="churn",
            version="4",
            inputs=frame,
            feature_names=["plan", "monthly"],
            predictions=None,  # only probabilities were asked for: the top class is logged
            proba=np.asarray([[0.3, 0.7], [0.9, 0.1]]),
            classes=["no", "yes"],
            latency_ms=2.0,
        )
    )
    writer.close()
    iris = store.read_records("iris")
    assert [(r.request_id, r.row) for r in iris] == [("req-1", 0), ("req-1", 1), ("req-1", 2)]
    assert iris[1].inputs == dict(zip(FEATURES, item.inputs[1].tolist(), strict=True))
    assert iris[1].prediction == "setosa"
    churn = store.read_records("churn")
    assert [r.inputs for r in churn] == [
        {"plan": "pro", "monthly": 10.5},
        {"plan": None, "monthly": None},
    ]
    assert [r.prediction for r in churn] == ["yes", "no"]
    assert churn[0].proba == [0.3, 0.7]
    assert churn[0].version == "4"
    assert churn[0].latency_ms == 2.0


def test_redacted_features_never_reach_the_database(
    store: BatchRecordingStore, metrics: MonitoringMetrics, tmp_path: Path
) -> None:
    config = WriterConfig(redact=frozenset({"sepal_width", "petal_width"}))
    writer = PredictionLogWriter(store, config, metrics)
    writer.start()
    writer.offer(pending("r1", rows=4))
    writer.close()
    assert [set(r.inputs) for r in store.read_records("iris")] == [
        {"sepal_length", "petal_length"}
    ] * 4
    with sqlite3.connect(tmp_path / "predictions.db") as conn:
        raw = " ".join(
            a + b for a, b in conn.execute("SELECT features, inputs FROM prediction_requests")
        )
        assert raw  # the request was logged
    assert "sepal_width" not in raw
    assert "petal_width" not in raw


def test_sampling_is_per_request(store: BatchRecordingStore, metrics: MonitoringMetrics) -> None:
    random.seed(1234)
    writer = PredictionLogWriter(store, WriterConfig(sample_rate=0.25), metrics)
    writer.start()
    sampled = 0
    for i in range(400):
        if writer.is_sampled():
            sampled += 1
            writer.offer(pending(f"r{i}", rows=2))
    writer.close()
    assert 60 <= sampled <= 140
    assert store.count() == 2 * sampled  # a sampled request keeps all its rows

    never = PredictionLogWriter(store, WriterConfig(sample_rate=0.0), metrics)
    assert not any(never.is_sampled() for _ in range(1000))
    always = PredictionLogWriter(store, WriterConfig(sample_rate=1.0), metrics)
    assert all(always.is_sampled() for _ in range(1000))


def test_old_records_are_pruned_at_start_and_periodically(
    store: BatchRecordingStore, metrics: MonitoringMetrics
) -> None:
    now = datetime.now(UTC)

    def old_record(request_id: str) -> PredictionRecord:
        return PredictionRecord(
            ts=now - timedelta(days=40),
            request_id=request_id,
            row=0,
            model="iris",
            version="1",
            inputs={},
            prediction="setosa",
            proba=None,
            latency_ms=1.0,
        )

    store.write([old_record("before-start")])
    config = WriterConfig(retention_s=30 * 86_400, prune_interval_s=0.2)
    writer = PredictionLogWriter(store, config, metrics)
    writer.start()
    writer.offer(pending("fresh"))
    assert writer.flush(WAIT_S)
    wait_until(lambda: [r.request_id for r in store.read_records("iris")] == ["fresh"])
    store.write([old_record("while-running")])
    wait_until(lambda: [r.request_id for r in store.read_records("iris")] == ["fresh"])
    writer.close()


def test_drop_mode_counts_what_a_full_queue_refused(
    store: BatchRecordingStore, metrics: MonitoringMetrics
) -> None:
    writer = PredictionLogWriter(store, WriterConfig(queue_rows=10, when_full="drop"), metrics)
    for i in range(8):  # not started: nothing drains
        assert writer.offer(pending(f"r{i}", rows=2, version="3"))
    assert writer.queued_rows == 10
    assert sample(metrics, "log_dropped", model="iris", version="3") == 6
    writer.close()
    assert store.count() == 10
    assert sample(metrics, "log_written", model="iris", version="3") == 10


def test_block_mode_waits_for_room_and_never_loses_a_record(
    store: BatchRecordingStore, metrics: MonitoringMetrics
) -> None:
    writer = PredictionLogWriter(store, WriterConfig(queue_rows=6, batch_rows=4), metrics)

    async def scenario() -> None:
        for i in range(3):
            assert writer.offer(pending(f"first{i}", rows=2))
        assert not writer.offer(pending("refused", rows=2))  # full: the caller must wait
        waiting = asyncio.create_task(writer.put(pending("waits", rows=2)))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # nothing drains until the writer starts
        writer.start()
        await asyncio.wait_for(waiting, WAIT_S)

        async def client(k: int) -> None:
            for i in range(25):
                item = pending(f"c{k}-{i}", rows=1 + i % 3)
                if not writer.offer(item):
                    await writer.put(item)

        await asyncio.wait_for(asyncio.gather(*(client(k) for k in range(8))), WAIT_S)

    asyncio.run(scenario())
    writer.close()
    expected_rows = 3 * 2 + 2 + 8 * sum(1 + i % 3 for i in range(25))
    assert store.count() == expected_rows
    ids = {r.request_id for r in store.read_records("iris")}
    assert "refused" not in ids
    assert {"waits", "c7-24"} <= ids
    assert sample(metrics, "log_dropped", model="iris", version="1") == 0


def test_block_mode_gives_up_with_overloaded_after_the_timeout(
    store: BatchRecordingStore, metrics: MonitoringMetrics
) -> None:
    config = WriterConfig(queue_rows=2, block_timeout_s=0.1)
    writer = PredictionLogWriter(store, config, metrics)
    writer.offer(pending("r1", rows=2))

    async def scenario() -> None:
        await writer.put(pending("r2"))

    with pytest.raises(Overloaded, match="not keeping up"):
        asyncio.run(scenario())
    writer.close()
    assert {r.request_id for r in store.read_records("iris")} == {"r1"}


def test_flush_waits_until_everything_offered_is_written(
    store: BatchRecordingStore, metrics: MonitoringMetrics
) -> None:
    writer = PredictionLogWriter(store, WriterConfig(linger_s=5.0), metrics)
    writer.start()
    for i in range(5):
        writer.offer(pending(f"r{i}"))
        assert writer.flush(WAIT_S)  # does not sit out the linger
        assert store.count() == i + 1
    writer.close()


def test_close_writes_everything_queued_and_later_offers_are_dropped(
    store: BatchRecordingStore, metrics: MonitoringMetrics
) -> None:
    writer = PredictionLogWriter(store, WriterConfig(batch_rows=7), metrics)
    writer.start()
    for i in range(100):
        writer.offer(pending(f"r{i}", rows=1 + i % 4))
    writer.close()
    assert not writer.is_running
    assert store.count() == sum(1 + i % 4 for i in range(100))
    assert writer.offer(pending("late"))
    assert sample(metrics, "log_dropped", model="iris", version="1") == 1
    assert sample(metrics, "log_queue_depth") == 0


def test_a_locked_database_is_retried_until_it_accepts_the_records(
    store: BatchRecordingStore, metrics: MonitoringMetrics, tmp_path: Path
) -> None:
    writer = PredictionLogWriter(store, WriterConfig(retry_max_s=0.2), metrics)
    writer.start()
    blocker = sqlite3.connect(tmp_path / "predictions.db", isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        for i in range(20):
            writer.offer(pending(f"r{i}", rows=3))
        wait_until(lambda: sample(metrics, "log_queue_depth") > 0)
        assert not writer.flush(0.3)  # nothing can land while the lock is held
        assert writer.is_running
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert writer.flush(WAIT_S)
    writer.close()
    assert store.count() == 60
    assert sample(metrics, "log_dropped", model="iris", version="1") == 0


def test_close_gives_records_up_when_the_database_never_comes_back(
    store: BatchRecordingStore, metrics: MonitoringMetrics, tmp_path: Path
) -> None:
    config = WriterConfig(close_timeout_s=0.5, retry_max_s=0.1)
    writer = PredictionLogWriter(store, config, metrics)
    writer.start()
    blocker = sqlite3.connect(tmp_path / "predictions.db", isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        writer.offer(pending("r1", rows=5))
        writer.close()  # returns once the close timeout passed
        assert not writer.is_running
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.count() == 0
    assert sample(metrics, "log_dropped", model="iris", version="1") == 5


def test_block_mode_drops_and_counts_while_the_database_is_down(
    store: BatchRecordingStore, metrics: MonitoringMetrics, tmp_path: Path
) -> None:
    """Blocking paces requests to a slow writer; one that cannot write would stop serving."""
    config = WriterConfig(queue_rows=4, batch_rows=2, retry_max_s=0.1, block_timeout_s=10 * WAIT_S)
    writer = PredictionLogWriter(store, config, metrics)
    writer.start()
    blocker = sqlite3.connect(tmp_path / "predictions.db", isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # every write fails until it ends

        async def scenario() -> None:
            for i in range(10):  # far past the bound: nobody waits out the block timeout
                item = pending(f"r{i}", rows=2)
                if not writer.offer(item):
                    await asyncio.wait_for(writer.put(item), WAIT_S)

        asyncio.run(scenario())
        dropped = sample(metrics, "log_dropped", model="iris", version="1")
        assert dropped > 0
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert writer.flush(WAIT_S)
    writer.close()
    assert store.count() + dropped == 10 * 2  # every offered row written or counted
