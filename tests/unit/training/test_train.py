"""mlserve.training.train: messy data in, a registered, servable version and a recorded run out."""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.pandas import column, data_frames, range_indexes
from messy_data import MessyDataset
from sklearn.linear_model import LogisticRegression

from mlserve.errors import (
    Conflict,
    DatasetError,
    InvalidInput,
    MlserveError,
    NotBetterThanBaseline,
    UnsafeArtifact,
)
from mlserve.registry import RegistryStore
from mlserve.runtimes import load_runtime
from mlserve.training import TrainRequest, TrainResult, git_commit, normalize_features, train
from mlserve.training.evaluate import CLASSIFICATION_METRICS, REGRESSION_METRICS
from mlserve.training.train import build_pipeline
from mlserve.types import Feature


@pytest.fixture(autouse=True)
def outside_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train from a folder outside any git repository (runs record the cwd's commit)."""
    monkeypatch.chdir(tmp_path)


def test_messy_classification_registers_a_complete_version(
    registry_store: RegistryStore, churn_csv: MessyDataset
) -> None:
    result = train(registry_store, TrainRequest(churn_csv.path, "churned", name="churn"))

    version = result.version
    assert (version.name, version.version, version.framework) == ("churn", 1, "sklearn")
    assert {p.code for p in result.report.warnings} == {
        "rows_without_target",
        "duplicate_rows",
        "constant_column",
    }
    signature = version.signature
    assert signature.task == "classification"
    assert signature.target == "churned"
    assert signature.classes == ("no", "yes")
    assert signature.outputs == ("predict", "predict_proba")
    assert signature.inputs == (
        Feature("age", "float64", "numeric", (), nullable=True),
        Feature("plan", "string", "categorical", ("basic", "pro", "team"), nullable=True),
        Feature("monthly_fee", "float64", "numeric", (), nullable=False),
    )
    assert set(version.metrics) == set(CLASSIFICATION_METRICS)
    assert set(result.baseline_metrics) == set(CLASSIFICATION_METRICS)
    assert result.rows_train + result.rows_test == churn_csv.usable_rows
    assert result.rows_test == math.ceil(0.2 * churn_csv.usable_rows)
    assert version.params["estimator"] == "logistic_regression"
    assert version.params["seed"] == 0
    assert version.params["test_size"] == 0.2
    assert version.params["max_iter"] == 1000
    assert version.tags["estimator"] == "logistic_regression"
    assert version.data_fingerprint is not None
    assert version.data_fingerprint.startswith("sha256:")
    profile = version.reference_profile
    assert profile is not None
    assert profile["rows"] == churn_csv.usable_rows
    assert set(profile["features"]) == {"age", "plan", "monthly_fee"}
    assert set(profile["features"]["plan"]["frequencies"]) == {"basic", "pro", "team"}
    assert profile["features"]["age"]["nulls"] == 4
    assert profile["sample"]["columns"] == ["age", "plan", "monthly_fee"]


def test_classifier_beats_the_majority_baseline(
    registry_store: RegistryStore, churn_csv: MessyDataset
) -> None:
    result = train(registry_store, TrainRequest(churn_csv.path, "churned"))

    assert result.version.name == "churn"  # the file's stem
    assert result.metrics["accuracy"] > result.baseline_metrics["accuracy"]
    assert result.metrics["roc_auc"] > 0.8
    assert result.baseline_metrics["roc_auc"] == 0.5


def test_messy_regression_from_parquet_beats_the_mean(
    registry_store: RegistryStore, house_parquet: MessyDataset
) -> None:
    result = train(
        registry_store,
        TrainRequest(house_parquet.path, "price", estimator="linear_regression", alias="staging"),
    )

    version = result.version
    assert version.name == "houses"
    assert version.aliases == ("staging",)
    assert version.signature.task == "regression"
    assert version.signature.classes == ()
    assert version.signature.outputs == ("predict",)
    assert [(f.name, f.kind) for f in version.signature.inputs] == [
        ("sqft", "numeric"),
        ("rooms", "numeric"),
        ("city", "categorical"),
    ]
    assert version.signature.inputs[2].categories == ("amsterdam", "delft", "utrecht")
    assert set(version.metrics) == set(REGRESSION_METRICS)
    assert result.rows_train + result.rows_test == house_parquet.usable_rows
    assert result.metrics["r2"] > 0.9
    assert result.baseline_metrics["r2"] <= 0
    assert result.metrics["rmse"] < result.baseline_metrics["rmse"]
    assert result.metrics["mae"] < result.baseline_metrics["mae"]
    assert version.params["estimator"] == "linear_regression"


def test_each_run_is_recorded_with_its_version(
    registry_store: RegistryStore, churn_csv: MessyDataset
) -> None:
    first = train(registry_store, TrainRequest(churn_csv.path, "churned", name="churn"))
    second = train(
        registry_store,
        TrainRequest(churn_csv.path, "churned", name="churn", estimator="knn", seed=3),
    )

    runs = registry_store.list_runs("churn")
    assert [(r.version, r.estimator) for r in runs] == [(2, "knn"), (1, "logistic_regression")]
    run = runs[1]
    assert run == first.run
    assert run.task == "classification"
    assert run.metrics == first.metrics
    assert run.baseline_metrics == first.baseline_metrics
    assert run.params == first.version.params
    assert run.data_path == str(churn_csv.path)
    assert run.data_fingerprint == first.version.data_fingerprint
    assert (run.rows_train, run.rows_test) == (first.rows_train, first.rows_test)
    assert 0 <= run.duration_s < 60
    assert run.git_commit is None
    assert runs[0].params["seed"] == 3
    # Same rows, same fingerprint, whatever the split or estimator.
    assert runs[0].data_fingerprint == run.data_fingerprint == second.version.data_fingerprint


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_run_records_the_commit_when_inside_a_git_repository(
    registry_store: RegistryStore, churn_csv: MessyDataset, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    git("init", "-q")
    git("commit", "-q", "--allow-empty", "-m", "start")
    head = git("rev-parse", "HEAD")

    assert git_commit(repo) == head
    assert git_commit(tmp_path) is None
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(repo)
        result = train(registry_store, TrainRequest(churn_csv.path, "churned"))
    assert result.run is not None
    assert result.run.git_commit == head


def test_saved_model_predicts_raw_rows_with_unseen_categories_and_nulls(
    registry_store: RegistryStore, churn_csv: MessyDataset
) -> None:
    version = train(registry_store, TrainRequest(churn_csv.path, "churned")).version
    runtime = load_runtime(registry_store.local_folder(version), expected_sha256=version.sha256)
    rows = pd.DataFrame(
        {
            "churned": ["yes", None, "no", None],  # extra columns are ignored
            "monthly_fee": [20.0, None, 55.5, 80.0],
            "plan": ["enterprise", None, "basic", "pro"],
            "age": [np.nan, 30.0, 61.0, None],
        }
    )

    predicted = runtime.predict(rows)
    probabilities = runtime.predict_proba(rows)

    assert set(predicted) <= {"yes", "no"}
    assert len(predicted) == 4
    assert runtime.classes == ["no", "yes"]
    assert probabilities.shape == (4, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_skops_format_refuses_pickles_under_safe_loading_and_round_trips(
    registry_store: RegistryStore, churn_csv: MessyDataset
) -> None:
    joblib_version = train(registry_store, TrainRequest(churn_csv.path, "churned")).version
    skops_version = train(
        registry_store, TrainRequest(churn_csv.path, "churned", model_format="skops")
    ).version

    assert joblib_version.model_file == "model.joblib"
    assert skops_version.model_file == "model.skops"
    with pytest.raises(UnsafeArtifact, match="pickle"):
        load_runtime(registry_store.local_folder(joblib_version), safe=True)
    unsafe = load_runtime(registry_store.local_folder(skops_version), safe=False)
    rows = churn_csv.frame.head(5)
    assert list(unsafe.predict(rows)) == list(
        load_runtime(registry_store.local_folder(joblib_version)).predict(rows)
    )


def test_skops_model_trained_by_mlserve_loads_with_safe_loading(
    registry_store: RegistryStore, churn_csv: MessyDataset
) -> None:
    version = train(
        registry_store, TrainRequest(churn_csv.path, "churned", model_format="skops")
    ).version

    runtime = load_runtime(
        registry_store.local_folder(version), expected_sha256=version.sha256, safe=True
    )

    assert len(runtime.predict(churn_csv.frame.head(3))) == 3


def test_same_seed_gives_the_same_metrics(
    registry_store: RegistryStore, house_parquet: MessyDataset
) -> None:
    def metrics(seed: int) -> dict[str, float]:
        request = TrainRequest(
            house_parquet.path, "price", estimator="random_forest", seed=seed, name="houses"
        )
        return train(registry_store, request).metrics

    first, again, other = metrics(5), metrics(5), metrics(6)

    assert first == again
    assert first != other


@pytest.mark.parametrize(
    ("dataset", "target", "estimator", "allowed"),
    [
        ("churn_csv", "churned", "ridge", "gradient_boosting, knn, logistic_regression"),
        ("house_parquet", "price", "logistic_regression", "knn, linear_regression"),
    ],
)
def test_estimator_must_fit_the_task(
    registry_store: RegistryStore,
    request: pytest.FixtureRequest,
    dataset: str,
    target: str,
    estimator: str,
    allowed: str,
) -> None:
    data: MessyDataset = request.getfixturevalue(dataset)

    with pytest.raises(InvalidInput, match=f"estimator '{estimator}' does not fit") as caught:
        train(registry_store, TrainRequest(data.path, target, estimator=estimator))

    assert allowed in str(caught.value)
    assert registry_store.list_models() == []


def test_an_explicit_task_overrides_inference(
    registry_store: RegistryStore, churn_csv: MessyDataset
) -> None:
    frame = churn_csv.frame.assign(score=lambda f: (f["churned"] == "yes").astype(float) * 3)
    frame.loc[frame["churned"].isna(), "score"] = np.nan
    path = churn_csv.path.with_name("scores.csv")
    frame.drop(columns=["churned"]).to_csv(path, index=False)

    result = train(registry_store, TrainRequest(path, "score", task="regression"))

    assert result.version.signature.task == "regression"
    assert set(result.metrics) == set(REGRESSION_METRICS)


def test_dataset_error_lists_every_problem_and_registers_nothing(
    registry_store: RegistryStore, churn_csv: MessyDataset
) -> None:
    frame = churn_csv.frame.assign(answer=churn_csv.frame["churned"].map({"yes": 1, "no": 0}))
    frame.loc[0, ["churned", "answer"]] = ["maybe", 2]
    path = churn_csv.path.with_name("bad.csv")
    frame.to_csv(path, index=False)

    with pytest.raises(DatasetError, match=r"bad\.csv cannot be trained on: 2 problem\(s\)") as err:
        train(registry_store, TrainRequest(path, "churned"))

    problems = err.value.problems
    assert len(problems) == 2
    assert any("'answer' is identical to the target" in p for p in problems)
    assert any("'maybe' (1 row)" in p for p in problems)
    assert registry_store.list_models() == []
    assert registry_store.list_runs() == []


def test_dropping_the_leaking_column_lets_training_proceed(
    registry_store: RegistryStore, churn_csv: MessyDataset
) -> None:
    path = churn_csv.path.with_name("leaky.csv")
    churn_csv.frame.assign(label=churn_csv.frame["churned"]).to_csv(path, index=False)

    result = train(registry_store, TrainRequest(path, "churned", drop=("label",)))

    assert "label" not in result.version.signature.feature_names


@pytest.mark.parametrize(
    ("request_args", "error", "message"),
    [
        ({"target": "nope"}, DatasetError, "1 problem"),
        ({"drop": ("ghost",)}, DatasetError, "--drop names unknown column"),
        ({"test_size": 1.5}, InvalidInput, "--test-size must be between 0 and 1"),
        ({"data": Path("missing.csv")}, DatasetError, "missing.csv: no such file"),
        ({"data": Path("notes.txt")}, DatasetError, "unsupported file type '.txt'"),
        ({"data": Path("garbage.parquet")}, DatasetError, "cannot read as parquet"),
    ],
    ids=["missing-target", "unknown-drop", "test-size", "no-file", "unsupported", "unreadable"],
)
def test_bad_requests_fail_before_registering(
    registry_store: RegistryStore,
    churn_csv: MessyDataset,
    request_args: dict[str, object],
    error: type[MlserveError],
    message: str,
) -> None:
    Path("garbage.parquet").write_bytes(b"not a parquet file")  # in tmp_path, the cwd
    request = TrainRequest(**{"data": churn_csv.path, "target": "churned", **request_args})  # type: ignore[arg-type]  # test table

    with pytest.raises(error, match=message):
        train(registry_store, request)

    assert registry_store.list_models() == []


def test_normalize_features_gives_strings_for_categoricals_and_floats_for_booleans() -> None:
    frame = pd.DataFrame(
        {
            "n": [1.0, 2.0, np.nan],
            "c": pd.Series(["a", None, 3], dtype=object),
            "b": [True, False, True],
        }
    )

    out = normalize_features(frame)

    assert out["n"].tolist()[:2] == [1.0, 2.0]
    assert out["c"].tolist()[0::2] == ["a", "3"]
    assert pd.isna(out["c"][1])
    assert out["b"].dtype == np.float64
    assert frame["b"].dtype == bool  # the input is left alone


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    frame=data_frames(
        columns=[
            column("num", elements=st.one_of(st.none(), st.floats(-1e6, 1e6))),
            column("distinct", elements=st.floats(-1e3, 1e3), unique=True),
            column("cat", elements=st.sampled_from(["a", "b", "c", None])),
            column("label", elements=st.sampled_from(["x", "y", "x", "y", "z", None])),
        ],
        index=range_indexes(8, 40),
    ),
    estimator=st.sampled_from(["logistic_regression", "knn", "gradient_boosting"]),
)
def test_training_any_small_frame_either_registers_or_explains(
    frame: pd.DataFrame, estimator: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        frame.to_csv(folder / "data.csv", index=False)
        store = RegistryStore(
            f"sqlite:///{folder / 'registry.db'}", str(folder / "artifacts"), folder / "cache"
        )
        request = TrainRequest(folder / "data.csv", "label", estimator=estimator)
        try:
            result: TrainResult | None = train(store, request)
            refusal = None
        except MlserveError as exc:  # DatasetError, InvalidInput: a message, never a crash
            result, refusal = None, exc
        finally:
            models = store.list_models()
            store.close()

    if result is None:
        event(f"refused: {type(refusal).__name__}")
        assert str(refusal)
        assert models == []
    else:
        event("trained")
        assert result.version.version == 1
        assert result.rows_train > 0


def test_a_numeric_column_empty_in_the_training_rows_is_kept() -> None:
    # A mostly missing column can land in a split without one value (hypothesis found it):
    # the pipeline keeps it, so rows that do carry it still fit, and warns of nothing.
    frame = pd.DataFrame({"num": [np.nan] * 6, "other": [0.5, 1.0, 2.0, 3.0, 4.0, 5.0]})
    pipeline = build_pipeline(frame, LogisticRegression()).fit(frame, [0, 1, 0, 1, 0, 1])
    rows = pd.DataFrame({"num": [7.0, np.nan], "other": [1.0, 2.0]})
    assert pipeline[:-1].transform(rows).shape == (2, 2)
    assert len(pipeline.predict(rows)) == 2


def noise_csv(folder: Path, rows: int = 200) -> Path:
    """Features unrelated to an imbalanced target: no model beats the majority class."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=rows),
            "b": rng.normal(size=rows),
            "label": np.where(rng.random(rows) < 0.8, "common", "rare"),
        }
    )
    path = folder / "noise.csv"
    frame.to_csv(path, index=False)
    return path


def test_require_better_refuses_a_model_that_does_not_beat_the_baseline(
    registry_store: RegistryStore, tmp_path: Path
) -> None:
    path = noise_csv(tmp_path)
    with pytest.raises(NotBetterThanBaseline, match=r"does not beat the trivial baseline on acc"):
        train(registry_store, TrainRequest(path, "label", require_better=True))
    assert registry_store.list_models() == []
    assert registry_store.list_runs() == []

    registered = train(registry_store, TrainRequest(path, "label"))  # said plainly, not refused
    assert not registered.beats_baseline
    assert registered.metrics["accuracy"] <= registered.baseline_metrics["accuracy"]


def test_require_better_lets_a_model_that_beats_the_baseline_through(
    registry_store: RegistryStore, churn_csv: MessyDataset
) -> None:
    result = train(registry_store, TrainRequest(churn_csv.path, "churned", require_better=True))
    assert result.beats_baseline
    assert result.metrics["accuracy"] > result.baseline_metrics["accuracy"]


def test_a_model_name_keeps_its_target(
    registry_store: RegistryStore, churn_csv: MessyDataset
) -> None:
    first = train(registry_store, TrainRequest(churn_csv.path, "churned", name="churn"))
    with pytest.raises(
        Conflict, match=r"model 'churn' predicts 'churned'; this run predicts 'plan'"
    ):
        train(registry_store, TrainRequest(churn_csv.path, "plan", name="churn"))
    assert [v.version for v in registry_store.list_versions("churn")] == [first.version.version]
    other = train(registry_store, TrainRequest(churn_csv.path, "plan", name="churn-plan"))
    assert other.version.signature.target == "plan"
