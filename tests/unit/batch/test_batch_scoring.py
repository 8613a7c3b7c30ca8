"""Scoring a chunk: every record yields an output row or a reject that says why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from batch_data import FEATURES, NUMERIC, feature_frame, input_frame
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlserve.batch import PinnedModel
from mlserve.batch.readers import ReadPlan, discover_inputs, iter_chunks
from mlserve.batch.scoring import ScoredChunk, ScoringOptions, score_chunk
from mlserve.monitoring import describe_features
from mlserve.runtimes import Runtime, SklearnRuntime, load_runtime
from mlserve.types import Signature


@pytest.fixture
def runtime(churn_model: PinnedModel) -> Runtime:
    """churn:1 loaded in this process."""
    return load_runtime(churn_model.folder, expected_sha256=churn_model.sha256)


def score_file(path: Path, runtime: Runtime, options: ScoringOptions) -> list[ScoredChunk]:
    """Every chunk of ``path`` (chunks of 1000 records) scored."""
    plan = ReadPlan(options.input_columns(FEATURES), 1000)
    return [score_chunk(c, runtime, options) for c in iter_chunks(discover_inputs(str(path)), plan)]


def test_bad_csv_records_are_rejected_with_their_reason_and_the_rest_scored(
    tmp_path: Path, runtime: Runtime
) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        "id,f0,f1,f2,f3,plan\n"
        "1,0.1,0.2,0.3,0.4,basic\n"
        "2,0.1,abc,0.3,0.4,pro\n"  # not a number
        "3,0.1,0.2,,0.4,pro\n"  # missing, and training had no missing values
        "4,0.1,0.2,0.3,inf,team\n"  # not finite
        "5,0.1,0.2,0.3,0.4,gold\n"  # a plan the one-hot encoder refuses
        "6,0.1,0.2\n"  # too few fields
        "7, 1.5 ,0.2,0.3,0.4,team\n"  # spaces around a number are fine
    )
    [scored] = score_file(path, runtime, ScoringOptions("churn:1", id_column="id"))
    assert scored.table is not None
    assert scored.table.column("id").to_pylist() == ["1", "7"]
    assert scored.table.column_names == ["id", "prediction", "model_version"]
    reasons = {r.id: r.reason for r in scored.rejects}
    assert reasons["2"] == "feature 'f1' is not a number: 'abc'"
    assert reasons["3"] == "feature 'f2' is missing"
    assert reasons["4"] == "feature 'f3' is not finite"
    assert reasons["5"].startswith("model error: ValueError")
    assert [(r.row, r.line) for r in scored.rejects] == [(1, 3), (2, 4), (3, 5), (4, 6), (5, 7)]
    assert "expected 6 fields, found 3" in scored.rejects[-1].reason


def test_bad_json_lines_are_rejected_with_their_text(tmp_path: Path, runtime: Runtime) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"id": 1, "f0": 0.1, "f1": "0.2", "f2": 0.3, "f3": 4, "plan": "pro"}\n'
        "{oops\n"
        "[1, 2]\n"
        '{"id": 4, "f0": 0.1, "f2": 0.3, "f3": 4, "plan": "pro"}\n'
        '{"id": 5, "f0": true, "f1": 0.2, "f2": 0.3, "f3": 4, "plan": "pro"}\n'
    )
    [scored] = score_file(path, runtime, ScoringOptions("churn:1", id_column="id"))
    assert scored.table is not None
    assert scored.table.column("id").to_pylist() == [1]
    rejects = [(r.line, r.reason.split(":")[0], r.raw) for r in scored.rejects]
    assert rejects == [
        (2, "unparsable JSON", "{oops"),
        (3, "expected a JSON object, got list", "[1, 2]"),
        (4, "feature 'f1' is missing", None),
        (5, "feature 'f0' is not a number", None),
    ]


def test_output_rows_carry_row_numbers_passthrough_probabilities_and_version(
    tmp_path: Path, runtime: Runtime, churn_model: PinnedModel
) -> None:
    frame = input_frame(50)
    frame.to_parquet(tmp_path / "in.parquet")
    options = ScoringOptions("churn:1", passthrough=("segment",), proba=True)
    [scored] = score_file(tmp_path / "in.parquet", runtime, options)
    assert scored.rejects == ()
    assert scored.table is not None
    out = scored.table.to_pandas()
    assert list(out.columns) == [
        "row",
        "segment",
        "prediction",
        "proba_no",
        "proba_yes",
        "model_version",
    ]
    assert out["row"].tolist() == list(range(50))
    assert out["segment"].tolist() == frame["segment"].tolist()
    expected = runtime.predict(frame[FEATURES])
    assert out["prediction"].tolist() == list(expected)
    np.testing.assert_allclose(out["proba_no"] + out["proba_yes"], 1.0)
    assert set(out["model_version"]) == {churn_model.label}


def test_one_bad_row_costs_a_few_extra_calls_not_the_chunk(
    tmp_path: Path, runtime: Runtime
) -> None:
    frame = input_frame(64)
    frame.loc[37, "plan"] = "gold"
    frame.to_parquet(tmp_path / "in.parquet")
    calls = []
    predict = runtime.predict

    def counting_predict(batch: pd.DataFrame) -> np.ndarray:
        calls.append(len(batch))
        return predict(batch)

    runtime.predict = counting_predict  # count the calls a real model gets
    [scored] = score_file(
        tmp_path / "in.parquet", runtime, ScoringOptions("churn:1", id_column="id")
    )
    assert [r.id for r in scored.rejects] == [1037]
    assert scored.table is not None
    assert scored.table.num_rows == 63
    assert len(calls) <= 2 * 6 + 1  # log2(64) levels, two halves each, plus the first call


@pytest.fixture
def numeric_runtime() -> SklearnRuntime:
    """A scaler + logistic regression fitted on a frame of the four numeric features."""
    frame = feature_frame(200, seed=3)[NUMERIC]
    target = np.where(frame["f0"] > 0, "yes", "no")
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, target)
    return SklearnRuntime(model, Signature(inputs=describe_features(frame), task="classification"))


def test_an_all_numeric_model_gets_one_float_matrix_and_the_same_predictions(
    tmp_path: Path, numeric_runtime: SklearnRuntime
) -> None:
    frame = feature_frame(40, seed=4)[NUMERIC].astype(object)
    frame.loc[3, "f1"] = None  # missing, and training had no missing values
    frame.loc[5, "f2"] = float("inf")
    frame.loc[7, "f3"] = "oops"
    frame.to_csv(tmp_path / "in.csv", index_label="id")
    options = ScoringOptions("num:1", id_column="id")
    plan = ReadPlan(options.input_columns(NUMERIC), 1000)
    [chunk] = iter_chunks(discover_inputs(str(tmp_path / "in.csv")), plan)
    calls: list[object] = []
    predict = numeric_runtime.predict

    def recording_predict(batch: np.ndarray) -> np.ndarray:
        calls.append(batch)
        return predict(batch)

    numeric_runtime.predict = recording_predict  # see what the model gets
    scored = score_chunk(chunk, numeric_runtime, options)
    assert isinstance(calls[0], np.ndarray)
    assert calls[0].shape == (37, 4)
    assert [(r.id, r.reason) for r in scored.rejects] == [
        ("3", "feature 'f1' is missing"),
        ("5", "feature 'f2' is not finite"),
        ("7", "feature 'f3' is not a number: 'oops'"),
    ]
    good = feature_frame(40, seed=4)[NUMERIC].drop(index=[3, 5, 7])
    assert scored.table is not None
    assert scored.table.column("prediction").to_pylist() == list(predict(good))
