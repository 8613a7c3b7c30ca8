"""One database row per logged request, expanded back into exactly the rows it predicted."""

from __future__ import annotations

import math
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlserve.monitoring.predlog import PendingPrediction, PredictionLogStore, to_request
from mlserve.monitoring.predlog_store import ROWS_PER_INSERT, WAL_CHECKPOINT_PAGES


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file for every example (each example logs under a model of its own)."""
    return tmp_path_factory.mktemp("log") / "p.db"


@pytest.fixture(scope="module")
def store(log_file: Path) -> Iterator[PredictionLogStore]:
    """A store on ``log_file``; closed after."""
    opened = PredictionLogStore(f"sqlite:///{log_file}")
    yield opened
    opened.close()


@st.composite
def requests(draw: st.DrawFn) -> tuple[PendingPrediction, frozenset[str]]:
    """A request of any shape (NaNs included, as an array or a frame) and the features to
    redact from it."""
    rows = draw(st.integers(1, 30))
    width = draw(st.integers(1, 8))
    names = [f"f{i}" for i in range(width)]
    finite_or_nan = st.floats(allow_infinity=False, width=64) | st.just(math.nan)
    matrix = draw(hnp.arrays(np.float64, (rows, width), elements=finite_or_nan))
    inputs: np.ndarray | pd.DataFrame = matrix
    if draw(st.booleans()):
        frame = pd.DataFrame(matrix, columns=names)
        if draw(st.booleans()):  # a text column makes the frame mixed
            frame[names[0]] = draw(
                st.lists(st.text(max_size=5) | st.none(), min_size=rows, max_size=rows)
            )
        inputs = frame
    classes = draw(st.integers(0, 3))
    proba = None
    if classes:
        proba = draw(hnp.arrays(np.float64, (rows, classes), elements=st.floats(0, 1)))
    item = PendingPrediction(
        request_id=uuid.uuid4().hex,
        ts=time.time(),
        model=uuid.uuid4().hex,
        version="1",
        inputs=inputs,
        feature_names=names,
        predictions=np.arange(rows, dtype=np.int64) % 3,
        proba=proba,
        classes=[str(c) for c in range(classes)],
        latency_ms=1.5,
    )
    return item, frozenset(draw(st.sets(st.sampled_from(names))))


def expected_inputs(item: PendingPrediction, redact: frozenset[str]) -> list[dict[str, Any]]:
    """Per row, the logged features and their values (NaN and missing as None)."""
    frame = pd.DataFrame(item.inputs, columns=list(item.feature_names))
    kept = [name for name in item.feature_names if name not in redact]
    return [
        {name: None if pd.isna(frame[name].iloc[i]) else frame[name].iloc[i] for name in kept}
        for i in range(len(frame))
    ]


@settings(max_examples=80, deadline=None)
@given(request=requests())
def test_a_multi_row_request_is_one_database_row_and_expands_back_exactly(
    store: PredictionLogStore, log_file: Path, request: tuple[PendingPrediction, frozenset[str]]
) -> None:
    item, redact = request
    store.write_requests([to_request(item, redact)])

    with sqlite3.connect(log_file) as conn:
        logged = conn.execute(
            "SELECT rows FROM prediction_requests WHERE model = ?", (item.model,)
        ).fetchall()
    assert logged == [(item.rows,)]
    assert store.count(item.model) == item.rows

    records = store.read_records(item.model)
    assert [(r.request_id, r.row) for r in records] == [
        (item.request_id, i) for i in range(item.rows)
    ]
    assert [r.inputs for r in records] == expected_inputs(item, redact)
    assert [r.prediction for r in records] == np.asarray(item.predictions).tolist()
    assert [r.proba for r in records] == (
        [None] * item.rows if item.proba is None else item.proba.tolist()
    )

    window = store.read_window(item.model, None, None)
    kept = [name for name in item.feature_names if name not in redact]
    assert list(window.inputs.columns) == kept
    assert len(window.inputs) == len(window.predictions) == len(window.timestamps) == item.rows
    newest = store.read_window(item.model, None, None, limit=2)
    assert newest.predictions.tolist() == np.asarray(item.predictions).tolist()[-2:]

    frame = store.export(item.model, None, classes=list(item.classes))
    assert frame["row"].tolist() == list(range(item.rows))
    for index, name in enumerate(item.classes):
        assert item.proba is not None
        np.testing.assert_array_equal(frame[f"proba_{name}"].to_numpy(), item.proba[:, index])


def test_window_limits_cut_into_the_oldest_request_and_span_requests(
    store: PredictionLogStore,
) -> None:
    model = uuid.uuid4().hex
    items = [
        PendingPrediction(
            request_id=f"r{k}",
            ts=1_700_000_000.0 + k,
            model=model,
            version="1",
            inputs=np.full((rows, 2), float(k)),
            feature_names=["a", "b"],
            predictions=np.arange(rows) + 10 * k,
            proba=None,
            classes=[],
            latency_ms=1.0,
        )
        for k, rows in enumerate([3, 1, 4])
    ]
    store.write_requests([to_request(item, frozenset()) for item in items])
    newest = store.read_window(model, None, None, limit=6)
    assert newest.predictions.tolist() == [2, 10, 20, 21, 22, 23]
    assert newest.inputs["a"].tolist() == [0.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert newest.inputs.index.equals(pd.RangeIndex(6))
    assert store.read_window(model, None, None, limit=100).predictions.tolist() == [
        0, 1, 2, 10, 20, 21, 22, 23,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "count", [1, ROWS_PER_INSERT - 1, ROWS_PER_INSERT, 2 * ROWS_PER_INSERT + 5]
)
def test_a_write_of_many_requests_lands_whole_across_multi_row_inserts(
    store: PredictionLogStore, count: int
) -> None:
    """Writes go ROWS_PER_INSERT requests to a statement plus one statement per request left
    over: every request lands once, with its own values, whatever the count."""
    model = uuid.uuid4().hex
    items = [
        PendingPrediction(
            request_id=f"q{k}",
            ts=1_700_000_000.0 + k,
            model=model,
            version=str(1 + k % 2),
            inputs=np.full((1 + k % 3, 2), float(k)),
            feature_names=["a", "b"],
            predictions=np.full(1 + k % 3, k),
            proba=None,
            classes=[],
            latency_ms=float(k),
        )
        for k in range(count)
    ]
    store.write_requests([to_request(item, frozenset()) for item in items])

    records = store.read_records(model)
    expected = [(f"q{k}", row, str(1 + k % 2), k) for k in range(count) for row in range(1 + k % 3)]
    assert [(r.request_id, r.row, r.version, r.prediction) for r in records] == expected
    assert all(
        r.inputs == {"a": float(k), "b": float(k)}
        for r, (_, _, _, k) in zip(records, expected, strict=True)
    )
    assert [r.latency_ms for r in records if r.row == 0] == [float(k) for k in range(count)]


def _one(model: str, inputs: np.ndarray | pd.DataFrame, request_id: str = "r") -> PendingPrediction:
    return PendingPrediction(
        request_id=request_id,
        ts=1_700_000_000.0,
        model=model,
        version="1",
        inputs=inputs,
        feature_names=["a", "b"],
        predictions=np.zeros(len(inputs), dtype=np.int64),
        proba=None,
        classes=[],
        latency_ms=1.0,
    )


def test_float_inputs_are_stored_as_raw_float64_and_others_as_json(
    store: PredictionLogStore, log_file: Path
) -> None:
    model = uuid.uuid4().hex
    floats = np.array([[1.5, math.nan], [-0.0, 1e300]])
    mixed = pd.DataFrame({"a": ["x", None], "b": [1.0, 2.0]})
    store.write_requests(
        [
            to_request(_one(model, floats, "f"), frozenset()),
            to_request(_one(model, mixed, "m"), frozenset()),
        ]
    )
    with sqlite3.connect(log_file) as conn:
        stored = {
            rid: (text, blob)
            for rid, text, blob in conn.execute(
                "SELECT request_id, inputs, inputs_f64 FROM prediction_requests WHERE model = ?",
                (model,),
            )
        }
    assert stored["f"] == ("", floats.astype("<f8").tobytes())
    assert stored["m"][1] is None
    assert stored["m"][0] == '[["x",1.0],[null,2.0]]'
    records = store.read_records(model)
    assert [r.inputs for r in records] == [
        {"a": 1.5, "b": None},
        {"a": -0.0, "b": 1e300},
        {"a": "x", "b": 1.0},
        {"a": None, "b": 2.0},
    ]


def test_a_log_of_the_first_layout_gains_the_binary_column_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    """A file written before ``inputs_f64`` existed: opening it adds the column; its JSON rows
    read as before, new rows are stored in binary, and both read back together."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE prediction_requests (id INTEGER PRIMARY KEY AUTOINCREMENT, ts FLOAT"
            " NOT NULL, request_id VARCHAR(128) NOT NULL, model VARCHAR(255) NOT NULL, version"
            " VARCHAR(64) NOT NULL, rows INTEGER NOT NULL, features TEXT NOT NULL, inputs TEXT"
            " NOT NULL, predictions TEXT NOT NULL, proba TEXT, latency_ms FLOAT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO prediction_requests (ts, request_id, model, version, rows, features,"
            " inputs, predictions, proba, latency_ms) VALUES (1.7e9, 'old', 'm', '1', 2,"
            " '[\"a\",\"b\"]', '[[1.0,null],[3.0,4.0]]', '[0,1]', NULL, 2.0)"
        )
    opened = PredictionLogStore(f"sqlite:///{path}")
    try:
        opened.write_requests([to_request(_one("m", np.array([[5.0, 6.0]]), "new"), frozenset())])
        records = opened.read_records("m")
        window = opened.read_window("m", None, None)
    finally:
        opened.close()
    assert [(r.request_id, r.inputs) for r in records] == [
        ("old", {"a": 1.0, "b": None}),
        ("old", {"a": 3.0, "b": 4.0}),
        ("new", {"a": 5.0, "b": 6.0}),
    ]
    np.testing.assert_array_equal(
        window.inputs.to_numpy(dtype=float), [[1.0, math.nan], [3.0, 4.0], [5.0, 6.0]]
    )
    again = PredictionLogStore(f"sqlite:///{path}")  # a second open finds the column there
    again.close()


def test_sqlite_connections_checkpoint_in_short_steps(tmp_path: Path) -> None:
    store = PredictionLogStore(f"sqlite:///{tmp_path / 'steps.db'}")
    try:
        with store._engine.connect() as connection:  # the pragma is per connection: the store's
            pages = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        assert (pages, mode) == (WAL_CHECKPOINT_PAGES, "wal")
    finally:
        store.close()


def test_many_requests_inserted_in_yielding_chunks_all_land(tmp_path: Path) -> None:
    # More than one multi-row INSERT per transaction (the writer yields the CPU between them),
    # plus a remainder: every request is there once, in order.
    store = PredictionLogStore(f"sqlite:///{tmp_path / 'chunks.db'}")
    try:
        count = 3 * ROWS_PER_INSERT + 5
        items = [
            PendingPrediction(
                request_id=f"r{i:05d}",
                ts=1000.0 + i,
                model="m",
                version="1",
                inputs=np.full((1, 2), float(i)),
                feature_names=["a", "b"],
                predictions=np.array([i]),
                proba=None,
                classes=[],
                latency_ms=0.1,
            )
            for i in range(count)
        ]
        store.write_requests([to_request(item, frozenset()) for item in items])
        with sqlite3.connect(tmp_path / "chunks.db") as db:
            ids = [
                r[0] for r in db.execute("SELECT request_id FROM prediction_requests ORDER BY id")
            ]
        assert ids == [item.request_id for item in items]
    finally:
        store.close()
