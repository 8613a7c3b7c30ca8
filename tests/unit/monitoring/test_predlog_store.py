"""PredictionLogStore on real SQLite files: round trips, windows, export, prune, feedback, scores."""

from __future__ import annotations

import math
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error

from mlserve.monitoring.feedback import FeedbackItem
from mlserve.monitoring.predlog import PredictionLogStore, PredictionRecord

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def record(
    request_id: str,
    *,
    row: int = 0,
    model: str = "iris",
    version: str = "1",
    at: datetime = NOW,
    inputs: dict[str, Any] | None = None,
    prediction: Any = "setosa",
    proba: list[float] | None = None,
) -> PredictionRecord:
    """A record with sensible defaults."""
    return PredictionRecord(
        ts=at,
        request_id=request_id,
        row=row,
        model=model,
        version=version,
        inputs={"a": 1.0, "b": "x"} if inputs is None else inputs,
        prediction=prediction,
        proba=proba,
        latency_ms=1.25,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PredictionLogStore]:
    """A store on a fresh SQLite file; closed after."""
    opened = PredictionLogStore(f"sqlite:///{tmp_path / 'log' / 'predictions.db'}")
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PredictionLogStore]:
    """One store for property tests (each example uses its own model name)."""
    opened = PredictionLogStore(f"sqlite:///{tmp_path_factory.mktemp('log') / 'p.db'}")
    yield opened
    opened.close()


def test_opening_creates_tables_indexes_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "predictions.db"
    store = PredictionLogStore(f"sqlite:///{path}")
    try:
        inspector = sa.inspect(sa.create_engine(f"sqlite:///{path}"))
        assert {"prediction_requests", "feedback"} <= set(inspector.get_table_names())
        indexes = {tuple(i["column_names"]) for i in inspector.get_indexes("prediction_requests")}
        assert ("model", "version", "ts") in indexes
        assert ("model", "request_id") in indexes
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()


def test_a_file_with_the_old_layout_is_left_alone_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "predictions.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE predictions (id INTEGER PRIMARY KEY, inputs TEXT)")
        conn.execute("INSERT INTO predictions (inputs) VALUES ('{}')")
    store = PredictionLogStore(f"sqlite:///{path}")
    try:
        assert "ignores a table of the old layout" in caplog.text
        store.write([record("r1")])
        assert store.count() == 1
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM predictions").fetchone()[0] == 1


def test_many_processes_opening_one_file_at_once_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    errors: list[BaseException] = []
    stores: list[PredictionLogStore] = []

    def open_one() -> None:
        try:
            stores.append(PredictionLogStore(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    stores[0].write([record("r1")])
    assert all(s.count() == 1 for s in stores)
    for opened in stores:
        opened.close()


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


@settings(max_examples=60, deadline=None)
@given(
    inputs=st.dictionaries(st.text(min_size=1, max_size=12), json_scalars, max_size=8),
    prediction=st.one_of(st.text(max_size=10), st.integers(-1000, 1000), st.floats(-1e9, 1e9)),
    proba=st.none() | st.lists(st.floats(0, 1), min_size=1, max_size=5),
    micros=st.integers(0, 10**6 - 1),
)
def test_records_read_back_as_written(
    shared_store: PredictionLogStore,
    inputs: dict[str, Any],
    prediction: Any,
    proba: list[float] | None,
    micros: int,
) -> None:
    model = uuid.uuid4().hex
    written = record(
        "req-" + uuid.uuid4().hex,
        model=model,
        at=NOW.replace(microsecond=micros),
        inputs=inputs,
        prediction=prediction,
        proba=proba,
    )
    shared_store.write([written])
    assert shared_store.read_records(model) == [written]


def test_nan_inputs_read_back_as_missing(store: PredictionLogStore) -> None:
    store.write([record("r1", inputs={"a": math.nan, "b": None}), record("r2")])
    assert store.read_records("iris")[0].inputs == {"a": None, "b": None}
    window = store.read_window("iris", None, None)
    assert math.isnan(window.inputs.loc[0, "a"])  # a numeric column: missing is NaN
    assert window.inputs.loc[1, "a"] == 1.0


def test_read_window_filters_by_version_and_time_and_keeps_the_newest(
    store: PredictionLogStore,
) -> None:
    store.write(
        [
            record(
                f"r{i}",
                version="1" if i % 2 else "2",
                at=NOW + timedelta(minutes=i),
                inputs={"a": float(i), "b": str(i)},
                prediction=f"p{i}",
            )
            for i in range(10)
        ]
        + [record("other", model="churn")]
    )
    everything = store.read_window("iris", None, None)
    assert everything.inputs["a"].tolist() == [float(i) for i in range(10)]
    assert list(everything.inputs.columns) == ["a", "b"]
    assert everything.predictions.tolist() == [f"p{i}" for i in range(10)]
    assert str(everything.timestamps.dt.tz) == "UTC"
    assert everything.timestamps.iloc[3] == NOW + timedelta(minutes=3)

    version_1 = store.read_window("iris", "1", None)
    assert version_1.inputs["a"].tolist() == [1.0, 3.0, 5.0, 7.0, 9.0]

    since, until = NOW + timedelta(minutes=2), NOW + timedelta(minutes=6)
    between = store.read_window("iris", None, since, until)
    assert between.inputs["a"].tolist() == [2.0, 3.0, 4.0, 5.0]

    newest = store.read_window("iris", None, None, limit=3)
    assert newest.inputs["a"].tolist() == [7.0, 8.0, 9.0]
    assert newest.predictions.index.equals(newest.inputs.index)


def test_an_empty_window_is_empty(store: PredictionLogStore) -> None:
    window = store.read_window("iris", None, NOW)
    assert window.inputs.empty
    assert window.predictions.empty
    assert window.timestamps.empty


def test_export_is_flat_with_a_column_per_feature_and_class(store: PredictionLogStore) -> None:
    store.write(
        [
            record("a", inputs={"x": 1.5, "ts": "clash"}, proba=[0.2, 0.8], prediction="yes"),
            record("b", inputs={"x": 2.0, "ts": "clash"}, proba=[0.5, 0.5]),
            record("b", row=1, inputs={"x": 2.5, "ts": "clash"}, proba=[0.9, 0.1]),
            record("c", version="2"),
        ]
    )
    frame = store.export("iris", "1", classes=["no", "yes"])
    assert list(frame.columns) == [
        "ts", "request_id", "row", "model", "version", "x", "input_ts", "prediction",
        "proba_no", "proba_yes", "latency_ms", "unknown_categories", "route",
    ]  # fmt: skip
    assert frame["request_id"].tolist() == ["a", "b", "b"]
    assert frame["row"].tolist() == [0, 0, 1]
    assert frame["x"].tolist() == [1.5, 2.0, 2.5]
    assert frame["proba_yes"].tolist() == [0.8, 0.5, 0.1]
    assert frame["prediction"].tolist() == ["yes", "setosa", "setosa"]
    assert frame["ts"].iloc[0] == NOW
    without_classes = store.export("iris", "1")
    assert "proba_0" in without_classes.columns


def test_prune_deletes_only_old_predictions_and_feedback(store: PredictionLogStore) -> None:
    old, new = NOW - timedelta(days=40), NOW
    store.write([record(f"old{i}", at=old) for i in range(25)] + [record("new", at=new)])
    store.add_feedback("iris", [FeedbackItem("old1", "setosa")], now=old)
    store.add_feedback("iris", [FeedbackItem("new", "setosa")], now=new)
    deleted = store.prune(NOW - timedelta(days=30))
    assert deleted == 26
    assert [r.request_id for r in store.read_records("iris")] == ["new"]
    assert store.online_metrics("iris", None)["1"].labelled_rows == 1


def test_feedback_joins_by_request_and_row_and_reports_unknown_ids(
    store: PredictionLogStore,
) -> None:
    store.write(
        [
            record("r1"),
            record("r2", row=0, version="2"),
            record("r2", row=1, version="2"),
            record("r3", model="churn"),
        ]
    )
    result = store.add_feedback(
        "iris",
        [
            FeedbackItem("r1", "setosa"),
            FeedbackItem("r2", "virginica", row=1),
            FeedbackItem("r2", "setosa", row=5),  # no such row
            FeedbackItem("r3", "setosa"),  # another model's request
            FeedbackItem("nope", "setosa"),
            FeedbackItem("nope", "setosa"),
        ],
    )
    assert result.joined == 2
    assert result.joined_by_version == {"1": 1, "2": 1}
    assert result.unknown == ["r2", "r3", "nope"]


def test_a_second_label_for_a_row_replaces_the_first(store: PredictionLogStore) -> None:
    store.write([record("r1", prediction="setosa")])
    store.add_feedback("iris", [FeedbackItem("r1", "virginica")])
    assert store.online_metrics("iris", None)["1"].accuracy == 0.0
    store.add_feedback("iris", [FeedbackItem("r1", "setosa")])
    scores = store.online_metrics("iris", None)["1"]
    assert scores.labelled_rows == 1
    assert scores.accuracy == 1.0


def test_online_classification_scores_match_sklearn(store: PredictionLogStore) -> None:
    predicted = ["a", "b", "a", "c", "b", "a", "c", "c"]
    truth = ["a", "b", "b", "c", "a", "a", "c", "b"]
    store.write([record(f"r{i}", prediction=p) for i, p in enumerate(predicted)])
    store.write([record("unlabelled", prediction="a")])
    store.add_feedback("iris", [FeedbackItem(f"r{i}", t) for i, t in enumerate(truth)])
    scores = store.online_metrics("iris", None, {"1": "classification"})["1"]
    assert scores.labelled_rows == 8
    assert scores.accuracy == pytest.approx(accuracy_score(truth, predicted))
    assert scores.f1 == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert scores.mae is None


def test_numeric_class_labels_match_across_types(store: PredictionLogStore) -> None:
    store.write([record("r1", prediction=1), record("r2", prediction=0)])
    store.add_feedback("iris", [FeedbackItem("r1", "1"), FeedbackItem("r2", 0.0)])
    scores = store.online_metrics("iris", None, {"1": "classification"})["1"]
    assert scores.accuracy == 1.0


def test_online_regression_mae_matches_sklearn_and_respects_the_window(
    store: PredictionLogStore,
) -> None:
    predicted, truth = [1.0, 2.5, -3.0, 10.0], [1.5, 2.0, -1.0, 4.0]
    store.write(
        [record(f"r{i}", model="price", prediction=p) for i, p in enumerate(predicted)]
        + [record("old", model="price", prediction=100.0, at=NOW - timedelta(days=3))]
    )
    store.add_feedback(
        "price", [FeedbackItem(f"r{i}", t) for i, t in enumerate(truth)] + [FeedbackItem("old", 0)]
    )
    scores = store.online_metrics("price", NOW - timedelta(days=1))["1"]
    assert scores.task == "regression"  # guessed from numeric predictions
    assert scores.labelled_rows == 4
    assert scores.mae == pytest.approx(mean_absolute_error(truth, predicted))
    assert scores.accuracy is None


def test_count_by_model(store: PredictionLogStore) -> None:
    store.write([record("r1"), record("r2"), record("r3", model="churn")])
    assert store.count() == 3
    assert store.count("iris") == 2
    assert store.count("nothing") == 0


def test_prune_with_a_limit_deletes_a_slice_at_a_time(store: PredictionLogStore) -> None:
    old = NOW - timedelta(days=40)
    store.write(
        [record(f"a{i}", at=old) for i in range(7)]
        + [record(f"b{i}", version="2", at=old) for i in range(5)]
        + [record("new")]
    )
    cutoff = NOW - timedelta(days=30)
    assert store.prune(cutoff, limit=4) == 4
    assert store.count() == 9
    assert store.prune(cutoff, limit=100) == 8
    assert [r.request_id for r in store.read_records("iris")] == ["new"]
