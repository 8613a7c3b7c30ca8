"""Scoring a chunk: every record yields an output row or a reject that says why."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from batch_data import FEATURES, NUMERIC, feature_frame, input_frame
from hypothesis import given
from hypothesis import strategies as st
from sklearn.compose import make_column_transformer
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlserve.batch import PinnedModel
from mlserve.batch.readers import ReadPlan, discover_inputs, iter_chunks
from mlserve.batch.scoring import (
    MIN_THREAD_ROWS,
    ScoredChunk,
    ScoringOptions,
    _blocks,
    score_chunk,
)
from mlserve.inputs import InputPolicy, RowChecker, build_checker
from mlserve.monitoring import describe_features
from mlserve.runtimes import Runtime, SklearnRuntime, load_runtime
from mlserve.training.train import build_pipeline
from mlserve.types import Signature


@pytest.fixture
def runtime(churn_model: PinnedModel) -> Runtime:
    """churn:1 loaded in this process."""
    return load_runtime(churn_model.folder, expected_sha256=churn_model.sha256)


def checker_of(runtime: Runtime, policy: InputPolicy | None = None) -> RowChecker:
    """The input checker every door builds for ``runtime`` (probing it as a server would)."""
    return build_checker(runtime, None, policy or InputPolicy())


def score_file(path: Path, runtime: Runtime, options: ScoringOptions) -> list[ScoredChunk]:
    """Every chunk of ``path`` (chunks of 1000 records) scored."""
    plan = ReadPlan(options.input_columns(FEATURES), 1000)
    return [
        score_chunk(c, runtime, checker_of(runtime), options)
        for c in iter_chunks(discover_inputs(str(path)), plan)
    ]


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
        "5,0.1,0.2,0.3,0.4,gold\n"  # a plan training never saw
        "6,0.1,0.2\n"  # too few fields
        "7, 1.5 ,0.2,0.3,0.4,team\n"  # spaces around a number are fine
    )
    [scored] = score_file(path, runtime, ScoringOptions("churn:1", id_column="id"))
    assert scored.table is not None
    assert scored.table.column("id").to_pylist() == ["1", "7"]
    assert scored.table.column_names == ["id", "prediction", "model_version"]
    reasons = {r.id: r.reason for r in scored.rejects}
    assert reasons["2"] == "feature 'f1' is not a number: 'abc'"
    assert reasons["3"] == "feature 'f2' is missing, and this model cannot fill it in"
    assert reasons["4"] == "feature 'f3' is not finite: 'inf'"
    assert reasons["5"].startswith("feature 'plan' has an unknown category: 'gold' (known: ")
    assert [(r.row, r.line) for r in scored.rejects] == [(1, 3), (2, 4), (3, 5), (4, 6), (5, 7)]
    assert "expected 6 fields, found 3" in scored.rejects[-1].reason


def test_bad_json_lines_are_rejected_with_their_text(tmp_path: Path, runtime: Runtime) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"id": 1, "f0": 0.1, "f1": "0.2", "f2": 0.3, "f3": 4, "plan": "pro"}\n'
        "{oops\n"
        "[1, 2]\n"
        '{"id": 4, "f0": 0.1, "f2": 0.3, "f3": 4, "plan": "pro"}\n'
        '{"id": 5, "f0": "yes", "f1": 0.2, "f2": 0.3, "f3": 4, "plan": "pro"}\n'
    )
    [scored] = score_file(path, runtime, ScoringOptions("churn:1", id_column="id"))
    assert scored.table is not None
    assert scored.table.column("id").to_pylist() == [1]
    rejects = [(r.line, r.reason.split(":")[0], r.raw) for r in scored.rejects]
    assert rejects == [
        (2, "unparsable JSON", "{oops"),
        (3, "expected a JSON object, got list", "[1, 2]"),
        (4, "feature 'f1' is missing, and this model cannot fill it in", None),
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

    checker = checker_of(numeric_runtime)  # probing the model calls predict too
    numeric_runtime.predict = recording_predict  # see what the model gets
    scored = score_chunk(chunk, numeric_runtime, checker, options)
    assert isinstance(calls[0], np.ndarray)
    assert calls[0].shape == (37, 4)
    assert [(r.id, r.reason) for r in scored.rejects] == [
        ("3", "feature 'f1' is missing, and this model cannot fill it in"),
        ("5", "feature 'f2' is not finite: 'inf'"),
        ("7", "feature 'f3' is not a number: 'oops'"),
    ]
    good = feature_frame(40, seed=4)[NUMERIC].drop(index=[3, 5, 7])
    assert scored.table is not None
    assert scored.table.column("prediction").to_pylist() == list(predict(good))


@pytest.fixture(scope="module")
def forest_runtime() -> SklearnRuntime:
    """A bare random forest on the four numeric features: its rows scale with threads."""
    frame = feature_frame(400, seed=5)[NUMERIC]
    target = np.where(frame["f0"] + frame["f1"] > 0, "yes", "no")
    forest = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0)
    signature = Signature(inputs=describe_features(frame), task="classification")
    return SklearnRuntime(forest.fit(frame, target), signature)


@pytest.mark.parametrize("threads", [2, 3, 7])
def test_a_chunk_scored_on_threads_is_the_chunk_scored_on_one(
    tmp_path: Path, forest_runtime: SklearnRuntime, threads: int
) -> None:
    rows = 3 * MIN_THREAD_ROWS + 17
    frame = feature_frame(rows, seed=6)[NUMERIC].astype(object)
    frame.loc[[5, MIN_THREAD_ROWS + 1, rows - 1], "f2"] = "oops"  # rejects in several blocks
    frame.to_csv(tmp_path / "in.csv", index_label="id")
    options = ScoringOptions("forest:1", id_column="id", proba=True)
    plan = ReadPlan(options.input_columns(NUMERIC), rows)
    [chunk] = iter_chunks(discover_inputs(str(tmp_path / "in.csv")), plan)
    assert forest_runtime.scales_with_threads
    one = score_chunk(chunk, forest_runtime, checker_of(forest_runtime), options)
    many = score_chunk(chunk, forest_runtime, checker_of(forest_runtime), options, threads=threads)
    assert one.table is not None
    assert many.table is not None
    assert many.table.equals(one.table)  # bit for bit, probabilities included
    assert many.rejects == one.rejects
    assert [r.id for r in many.rejects] == ["5", str(MIN_THREAD_ROWS + 1), str(rows - 1)]


def test_a_model_error_in_one_block_rejects_only_its_row(
    tmp_path: Path, forest_runtime: SklearnRuntime
) -> None:
    rows = 2 * MIN_THREAD_ROWS
    feature_frame(rows, seed=7)[NUMERIC].to_parquet(tmp_path / "in.parquet")
    options = ScoringOptions("forest:1")
    [chunk] = iter_chunks(
        discover_inputs(str(tmp_path / "in.parquet")),
        ReadPlan(options.input_columns(NUMERIC), rows),
    )
    bad = float(chunk.table.column("f3")[rows - 3].as_py())  # type: ignore[union-attr]
    predict = forest_runtime.predict

    def refusing_predict(batch: np.ndarray) -> np.ndarray:  # a model that refuses one value
        if np.any(batch[:, 3] == bad):
            raise ValueError("value out of range")
        return predict(batch)

    runtime = SklearnRuntime(forest_runtime.estimator, forest_runtime.signature)
    runtime.predict = refusing_predict  # type: ignore[method-assign]
    scored = score_chunk(chunk, runtime, checker_of(runtime), options, threads=2)
    assert [(r.row, r.reason) for r in scored.rejects] == [
        (rows - 3, "the model refused it: ValueError: value out of range")
    ]
    assert scored.table is not None
    assert scored.table.column("row").to_pylist() == [i for i in range(rows) if i != rows - 3]


@given(rows=st.integers(0, 50_000), threads=st.integers(1, 16))
def test_blocks_cover_every_row_once_in_order(rows: int, threads: int) -> None:
    blocks = _blocks(rows, threads)
    assert blocks[0][0] == 0
    assert blocks[-1][1] == rows
    assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))
    assert 1 <= len(blocks) <= threads
    if len(blocks) > 1:
        assert min(stop - start for start, stop in blocks) >= MIN_THREAD_ROWS


def _forest_after(prepare: list[tuple[str, object]]) -> SklearnRuntime:
    """A forest after the ``prepare`` steps (bare when there are none)."""
    frame = feature_frame(300, seed=9)
    target = np.where(frame["f0"] > 0, "yes", "no")
    forest = RandomForestClassifier(n_estimators=10, random_state=0)
    used = frame if prepare else frame[NUMERIC]
    model = Pipeline([*prepare, ("model", forest)]) if prepare else forest
    return SklearnRuntime(
        model.fit(used, target),
        Signature(inputs=describe_features(used), task="classification"),
    )


def test_a_trained_forest_pipeline_scores_on_threads_with_the_same_bits(tmp_path: Path) -> None:
    frame = feature_frame(300, seed=9)
    target = np.where(frame["f0"] > 0, "yes", "no")
    model = build_pipeline(frame, RandomForestClassifier(n_estimators=10, random_state=0))
    runtime = SklearnRuntime(
        model.fit(frame, target),
        Signature(inputs=describe_features(frame), task="classification"),
    )
    assert runtime.scales_with_threads  # impute, scale, one-hot: row by row
    rows = 2 * MIN_THREAD_ROWS + 5
    source = input_frame(rows, seed=10)
    source.loc[[3, rows - 2], "plan"] = [None, "unseen"]
    source.to_parquet(tmp_path / "in.parquet")
    options = ScoringOptions("churn:1", id_column="id", proba=True)
    [chunk] = iter_chunks(
        discover_inputs(str(tmp_path / "in.parquet")),
        ReadPlan(options.input_columns(FEATURES), rows),
    )
    one = score_chunk(chunk, runtime, checker_of(runtime), options)
    two = score_chunk(chunk, runtime, checker_of(runtime), options, threads=2)
    assert one.table is not None
    assert two.table is not None
    assert two.table.equals(one.table)
    assert two.rejects == one.rejects


@pytest.mark.parametrize(
    ("prepare", "scales"),
    [
        ([], True),
        ([("scale", make_column_transformer((StandardScaler(), NUMERIC)))], True),
        ([("reduce", make_column_transformer((PCA(2), NUMERIC)))], False),  # sums across columns
        (
            [
                (
                    "encode",
                    make_column_transformer((OneHotEncoder(), ["plan"]), remainder="passthrough"),
                )
            ],
            False,  # sparse: a block's density, so its type, may differ from the whole's
        ),
    ],
)
def test_only_row_wise_transforms_before_a_forest_scale_with_threads(
    prepare: list[tuple[str, object]], scales: bool
) -> None:
    assert _forest_after(prepare).scales_with_threads is scales


def test_a_linear_model_does_not_scale_with_threads(numeric_runtime: SklearnRuntime) -> None:
    assert numeric_runtime.uses_linear_kernel
    assert not numeric_runtime.scales_with_threads
