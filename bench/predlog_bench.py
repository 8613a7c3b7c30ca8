"""Prediction log writer benchmark: CPU per logged row, for 1-row and 100-row requests.

Requests of a 20-feature float model are queued on a writer that was never started, so
``close`` drains the queue in this thread: the measured CPU is the writer's conversion and
database writes (against a SQLite file in a temp folder, already holding ``--prefill``
requests, as a log that has run for a while does), nothing else. Request ids are the server's
(time-ordered); ``--random-ids`` uses random ones, as clients sending their own may. Run alone:
``.venv/bin/python bench/predlog_bench.py``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from mlserve.logging import new_request_id
from mlserve.monitoring.metrics import MonitoringMetrics
from mlserve.monitoring.predlog import (
    PendingPrediction,
    PredictionLogStore,
    PredictionLogWriter,
    WriterConfig,
)

FEATURES = [f"f{i}" for i in range(20)]


def requests(
    count: int, rows: int, seed: int, *, random_ids: bool = False
) -> list[PendingPrediction]:
    """``count`` requests of ``rows`` float rows each, with class probabilities."""
    rng = np.random.default_rng(seed)
    made = []
    for _ in range(count):
        proba = rng.uniform(size=(rows, 2))
        made.append(
            PendingPrediction(
                request_id=f"{rng.integers(2**63):032x}" if random_ids else new_request_id(),
                ts=time.time(),
                model="bench",
                version="1",
                inputs=rng.normal(size=(rows, len(FEATURES))),
                feature_names=FEATURES,
                predictions=np.argmax(proba, axis=1),
                proba=proba,
                classes=["0", "1"],
                latency_ms=1.5,
            )
        )
    return made


def cpu_per_row_us(
    folder: Path, rows: int, total_rows: int, seed: int, prefill: int, random_ids: bool
) -> float:
    """CPU microseconds per logged row to drain ``total_rows`` rows in ``rows``-row requests
    into a log already holding ``prefill`` one-row requests."""
    store = PredictionLogStore(f"sqlite:///{folder / f'p{rows}-{seed}.db'}")
    metrics = MonitoringMetrics.create(CollectorRegistry())
    for start in range(0, prefill, 10_000):
        filler = PredictionLogWriter(store, WriterConfig(queue_rows=10**6), metrics)
        for item in requests(min(10_000, prefill - start), 1, seed + start, random_ids=random_ids):
            assert filler.offer(item)
        filler.close()
    writer = PredictionLogWriter(store, WriterConfig(queue_rows=10 * total_rows), metrics)
    for item in requests(total_rows // rows, rows, seed, random_ids=random_ids):
        assert writer.offer(item)
    started = time.process_time()
    writer.close()
    spent = time.process_time() - started
    assert store.count() == total_rows + prefill, (store.count(), total_rows)
    store.close()
    return spent / total_rows * 1e6


def main() -> None:
    """Print the best of a few rounds per request size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20_000, help="logged rows per round")
    parser.add_argument("--prefill", type=int, default=100_000, help="requests logged before")
    parser.add_argument("--random-ids", action="store_true", help="random request ids")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (1, 100):
            total = args.rows // 4 if rows == 1 else args.rows
            best = min(
                cpu_per_row_us(Path(tmp), rows, total, seed, args.prefill, args.random_ids)
                for seed in range(args.rounds)
            )
            print(
                f"{rows:>3}-row requests: {best:7.2f} us CPU per row, "
                f"{best * rows:8.1f} us per request, {1e6 / best:>10,.0f} rows/s per core"
            )


if __name__ == "__main__":
    main()
