"""The prediction log on a real PostgreSQL server answers exactly as on SQLite.

The server comes from ``postgres_url`` in tests/integration/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from mlserve.monitoring.metrics import MonitoringMetrics
from mlserve.monitoring.predlog import (
    PendingPrediction,
    PredictionLogStore,
    PredictionLogWriter,
    WriterConfig,
    to_request,
)
from mlserve.monitoring.predlog_store import ROWS_PER_INSERT

FEATURES = ["a", "b", "c"]


def _items(model: str, count: int) -> list[PendingPrediction]:
    """Requests of float rows (stored as bytes), of mixed rows (JSON), with and without proba,
    some with rows flagged for an unknown category."""
    rng = np.random.default_rng(7)
    items = []
    for i in range(count):
        rows = 1 + i % 4
        if i % 3 == 2:  # a mixed frame: JSON inputs, with a missing value
            inputs: np.ndarray | pd.DataFrame = pd.DataFrame(
                {"a": rng.normal(size=rows), "b": ["x"] * rows, "c": [None] * rows}
            )
        else:
            inputs = rng.normal(size=(rows, len(FEATURES)))
            inputs[0, 1] = np.nan if i % 5 == 0 else inputs[0, 1]
        proba = rng.uniform(size=(rows, 2)) if i % 2 else None
        items.append(
            PendingPrediction(
                request_id=f"req-{i:04d}",
                ts=1_700_000_000.0 + i,
                model=model,
                version="1",
                inputs=inputs,
                feature_names=FEATURES,
                predictions=np.array(["yes", "no"] * rows)[:rows],
                proba=proba,
                classes=["no", "yes"],
                latency_ms=0.5 + i,
                unknown_categories={"b": [rows - 1], "c": [0]} if i % 4 == 1 else {},
            )
        )
    return items


def test_multi_row_inserts_read_back_as_on_sqlite(postgres_url: str, tmp_path: Path) -> None:
    count = 2 * ROWS_PER_INSERT + 3  # two multi-row INSERTs and a remainder, in one transaction
    requests = [to_request(item, frozenset()) for item in _items("pg-direct", count)]
    pg, lite = (
        PredictionLogStore(postgres_url),
        PredictionLogStore(f"sqlite:///{tmp_path / 'p.db'}"),
    )
    try:
        pg.write_requests(requests)
        lite.write_requests(requests)
        on_pg, on_sqlite = pg.read_records("pg-direct"), lite.read_records("pg-direct")
        assert len(on_pg) == sum(r.rows for r in requests) == pg.count("pg-direct")
        assert on_pg == on_sqlite
        flags = {(r.request_id, r.row): r.unknown_categories for r in on_pg}
        assert flags[("req-0005", 0)] == ("c",)  # every 4th request, from the second, has two
        assert flags[("req-0005", 1)] == ("b",)  # rows: c unknown on the first, b on the other
        assert flags[("req-0004", 0)] == ()
        assert sum(bool(f) for f in flags.values()) == 2 * len(range(1, count, 4))
        exported = pg.export("pg-direct", "1")["unknown_categories"]
        pd.testing.assert_series_equal(
            exported, lite.export("pg-direct", "1")["unknown_categories"]
        )
        window_pg = pg.read_window("pg-direct", "1", since=None)
        window_lite = lite.read_window("pg-direct", "1", since=None)
        pd.testing.assert_frame_equal(window_pg.inputs, window_lite.inputs)
        assert window_pg.predictions.tolist() == window_lite.predictions.tolist()
    finally:
        pg.close()
        lite.close()


def test_the_writer_drains_into_postgres(postgres_url: str) -> None:
    store = PredictionLogStore(postgres_url)
    writer = PredictionLogWriter(
        store, WriterConfig(batch_rows=50), MonitoringMetrics.create(CollectorRegistry())
    )
    items = _items("pg-writer", 120)
    writer.start()
    try:
        for item in items:
            assert writer.offer(item)
        assert writer.flush(timeout_s=60)
    finally:
        writer.close()
    try:
        assert store.count("pg-writer") == sum(item.rows for item in items)
        ids = {record.request_id for record in store.read_records("pg-writer")}
        assert ids == {item.request_id for item in items}
    finally:
        store.close()


def test_an_older_postgres_log_gains_the_unknown_categories_column(postgres_url: str) -> None:
    """A table made before the column existed (in a database of its own) is upgraded on open:
    its rows stay, new rows carry their flags."""
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE old_layout")
    finally:
        admin.dispose()
    url = postgres_url.rsplit("/", 1)[0] + "/old_layout"
    old = sa.create_engine(url)
    try:
        with old.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE prediction_requests (id SERIAL PRIMARY KEY, ts FLOAT NOT NULL,"
                " request_id VARCHAR(128) NOT NULL, model VARCHAR(255) NOT NULL, version"
                " VARCHAR(64) NOT NULL, rows INTEGER NOT NULL, features TEXT NOT NULL, inputs"
                " TEXT NOT NULL, predictions TEXT NOT NULL, proba TEXT, latency_ms FLOAT NOT"
                " NULL, inputs_f64 BYTEA)"
            )
            conn.execute(
                sa.text(
                    "INSERT INTO prediction_requests (ts, request_id, model, version, rows,"
                    " features, inputs, predictions, latency_ms) VALUES (1.7e9, 'old', 'm', '1',"
                    " 1, :features, :inputs, :predictions, 1.0)"
                ),
                {
                    "features": '["a","b","c"]',
                    "inputs": '[[1.0,"x",null]]',
                    "predictions": '["no"]',
                },
            )
    finally:
        old.dispose()
    store = PredictionLogStore(url)
    try:
        item = _items("m", 2)[1]  # two rows, flagged
        store.write_requests([to_request(item, frozenset())])
        records = store.read_records("m")
    finally:
        store.close()
    upgraded = sa.create_engine(url)
    try:
        columns = [c["name"] for c in sa.inspect(upgraded).get_columns("prediction_requests")]
    finally:
        upgraded.dispose()
    assert columns[-3:] == ["inputs_f64", "unknown_categories", "route"]
    assert [(r.request_id, r.row, r.unknown_categories) for r in records] == [
        ("old", 0, ()),
        ("req-0001", 0, ("c",)),
        ("req-0001", 1, ("b",)),
    ]
    assert records[0].inputs == {"a": 1.0, "b": "x", "c": None}
