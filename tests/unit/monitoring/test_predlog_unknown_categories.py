"""Rows scored with a category training never saw are flagged in the prediction log: stored
with their request (NULL for the usual request), read back per row, in older files too."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from mlserve.monitoring.metrics import MonitoringMetrics
from mlserve.monitoring.predlog import (
    PendingPrediction,
    PredictionLogStore,
    PredictionLogWriter,
    PredictionRecord,
    WriterConfig,
    to_request,
)
from mlserve.monitoring.predlog_store import ROWS_PER_INSERT

FEATURES = ["region", "plan", "amount"]


def pending(
    request_id: str,
    unknown: Mapping[str, Sequence[int]] | None = None,
    *,
    rows: int = 4,
    model: str = "churn",
) -> PendingPrediction:
    """A request of ``rows`` mixed rows (two categorical features, one number)."""
    inputs = pd.DataFrame(
        {
            "region": [f"r{i}" for i in range(rows)],
            "plan": ["pro", "free"] * (rows // 2) + ["pro"] * (rows % 2),
            "amount": np.arange(rows, dtype=np.float64),
        }
    )
    return PendingPrediction(
        request_id=request_id,
        ts=1_700_000_000.0,
        model=model,
        version="1",
        inputs=inputs,
        feature_names=FEATURES,
        predictions=np.array(["yes", "no"] * rows)[:rows],
        proba=None,
        classes=["no", "yes"],
        latency_ms=1.0,
        unknown_categories={} if unknown is None else unknown,
    )


def stored_column(path: Path, model: str = "churn") -> list[str | None]:
    """The raw ``unknown_categories`` of every logged request of ``model``, in order."""
    with sqlite3.connect(path) as conn:
        return [
            value
            for (value,) in conn.execute(
                "SELECT unknown_categories FROM prediction_requests WHERE model = ? ORDER BY id",
                (model,),
            )
        ]


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    """Where the store of a test keeps its SQLite file."""
    return tmp_path / "predictions.db"


@pytest.fixture
def store(log_file: Path) -> Iterator[PredictionLogStore]:
    """A store on a fresh SQLite file; closed after."""
    opened = PredictionLogStore(f"sqlite:///{log_file}")
    yield opened
    opened.close()


def drain(
    store: PredictionLogStore,
    items: list[PendingPrediction],
    redact: frozenset[str] = frozenset(),
) -> None:
    """Log ``items`` through a real writer (never started: ``close`` writes them here)."""
    writer = PredictionLogWriter(
        store, WriterConfig(redact=redact), MonitoringMetrics.create(CollectorRegistry())
    )
    for item in items:
        assert writer.offer(item)
    writer.close()


def test_flagged_rows_read_back_with_exactly_their_unknown_features(
    store: PredictionLogStore, log_file: Path
) -> None:
    drain(store, [pending("r1", {"region": [3, 1], "plan": np.array([3])})])

    assert stored_column(log_file) == ['{"region":[1,3],"plan":[3]}']
    records = store.read_records("churn")
    assert [(r.row, r.unknown_categories) for r in records] == [
        (0, ()),
        (1, ("region",)),
        (2, ()),
        (3, ("region", "plan")),
    ]
    frame = store.export("churn", "1")
    assert frame["unknown_categories"].tolist() == ["", "region", "", "region,plan"]
    assert frame["region"].tolist() == ["r0", "r1", "r2", "r3"]  # the values are logged too


def test_a_request_without_unknown_categories_stores_null_and_reads_back_unflagged(
    store: PredictionLogStore, log_file: Path
) -> None:
    drain(store, [pending("plain"), pending("empty-lists", {"region": []})])

    assert stored_column(log_file) == [None, None]
    assert [r.unknown_categories for r in store.read_records("churn")] == [()] * 8
    assert store.export("churn", None)["unknown_categories"].tolist() == [""] * 8


def test_flags_of_a_redacted_feature_are_not_stored(
    store: PredictionLogStore, log_file: Path
) -> None:
    drain(
        store,
        [pending("r1", {"region": [0], "plan": [0, 2]}), pending("r2", {"plan": [1]})],
        redact=frozenset({"plan"}),
    )

    assert stored_column(log_file) == ['{"region":[0]}', None]
    flags = [(r.request_id, r.row) for r in store.read_records("churn") if r.unknown_categories]
    assert flags == [("r1", 0)]


def test_flags_land_on_their_own_requests_across_multi_row_inserts(
    store: PredictionLogStore,
) -> None:
    """Requests go ROWS_PER_INSERT to a statement plus a remainder: each keeps its flags."""
    count = 2 * ROWS_PER_INSERT + 3
    items = [
        pending(f"q{k:04d}", {"plan": [k % 3]} if k % 5 == 0 else None, rows=3)
        for k in range(count)
    ]
    store.write_requests([to_request(item, frozenset()) for item in items])

    flagged = [(r.request_id, r.row) for r in store.read_records("churn") if r.unknown_categories]
    assert flagged == [(f"q{k:04d}", k % 3) for k in range(count) if k % 5 == 0]
    frame = store.export("churn", "1")
    assert (frame["unknown_categories"] != "").sum() == len(flagged)


def test_per_row_records_written_with_flags_read_back_as_written(
    store: PredictionLogStore,
) -> None:
    written = [
        PredictionRecord(
            ts=datetime(2026, 5, 1, 12, 0, tzinfo=UTC),
            request_id="r",
            row=row,
            model="churn",
            version="1",
            inputs={"region": "x", "plan": "y"},
            prediction="no",
            proba=None,
            latency_ms=1.0,
            unknown_categories=flags,
        )
        for row, flags in enumerate([("plan",), (), ("region", "plan")])
    ]
    store.write(written)
    assert store.read_records("churn") == written


def old_table(metadata: sa.MetaData, *, with_binary_inputs: bool) -> sa.Table:
    """``prediction_requests`` as an older release created it: without ``unknown_categories``
    and, from the first release, without ``inputs_f64`` too."""
    binary = [sa.Column("inputs_f64", sa.LargeBinary, nullable=True)] if with_binary_inputs else []
    return sa.Table(
        "prediction_requests",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("features", sa.Text, nullable=False),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("predictions", sa.Text, nullable=False),
        sa.Column("proba", sa.Text, nullable=True),
        sa.Column("latency_ms", sa.Double, nullable=False),
        *binary,
        sa.Index("ix_prediction_requests_model_version_ts", "model", "version", "ts"),
        sa.Index("ix_prediction_requests_model_request_id", "model", "request_id"),
    )


def make_old_log(path: Path, *, with_binary_inputs: bool) -> None:
    """An older log file holding one two-row request of model ``churn``."""
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        metadata = sa.MetaData()
        table = old_table(metadata, with_binary_inputs=with_binary_inputs)
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                table.insert().values(
                    ts=1_600_000_000.0,
                    request_id="old",
                    model="churn",
                    version="1",
                    rows=2,
                    features='["region","plan","amount"]',
                    inputs='[["a","pro",1.0],["b",null,2.0]]',
                    predictions='["no","yes"]',
                    proba=None,
                    latency_ms=3.0,
                )
            )
    finally:
        engine.dispose()


def columns_of(path: Path) -> list[str]:
    """The columns of ``prediction_requests`` in ``path``, in table order."""
    with sqlite3.connect(path) as conn:
        return [row[1] for row in conn.execute("PRAGMA table_info(prediction_requests)")]


@pytest.mark.parametrize("with_binary_inputs", [True, False], ids=["inputs_f64", "first"])
def test_an_older_log_gains_the_column_keeps_its_rows_and_takes_flagged_rows(
    tmp_path: Path, with_binary_inputs: bool
) -> None:
    path = tmp_path / "old.db"
    make_old_log(path, with_binary_inputs=with_binary_inputs)
    assert "unknown_categories" not in columns_of(path)

    opened = PredictionLogStore(f"sqlite:///{path}")
    try:
        assert columns_of(path)[-3:] == ["inputs_f64", "unknown_categories", "route"]
        opened.write_requests([to_request(pending("new", {"plan": [1]}, rows=2), frozenset())])
        records = opened.read_records("churn")
        frame = opened.export("churn", "1")
    finally:
        opened.close()
    assert [(r.request_id, r.row, r.unknown_categories) for r in records] == [
        ("old", 0, ()),
        ("old", 1, ()),
        ("new", 0, ()),
        ("new", 1, ("plan",)),
    ]
    assert [r.inputs for r in records[:2]] == [
        {"region": "a", "plan": "pro", "amount": 1.0},
        {"region": "b", "plan": None, "amount": 2.0},
    ]
    assert frame["unknown_categories"].tolist() == ["", "", "", "plan"]
    assert stored_column(path) == [None, '{"plan":[1]}']
    again = PredictionLogStore(f"sqlite:///{path}")  # a second open finds the column there
    again.close()


def test_processes_opening_an_older_log_at_once_all_upgrade_it(tmp_path: Path) -> None:
    """Each opener may see the column missing; those that lose the race to add it look again
    rather than fail."""
    path = tmp_path / "old.db"
    make_old_log(path, with_binary_inputs=True)
    errors: list[BaseException] = []
    stores: list[PredictionLogStore] = []
    start = threading.Barrier(6)

    def open_one() -> None:
        try:
            start.wait(10)
            stores.append(PredictionLogStore(f"sqlite:///{path}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert not errors
        assert columns_of(path).count("unknown_categories") == 1
        stores[0].write_requests([to_request(pending("new", {"region": [0]}), frozenset())])
        assert all(s.count("churn") == 6 for s in stores)
    finally:
        for opened in stores:
            opened.close()
