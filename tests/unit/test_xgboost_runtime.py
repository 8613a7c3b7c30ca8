"""The XGBoost runtime: models trained here, registered, loaded, and answering as XGBoost does."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LogisticRegression

from mlserve.errors import ArtifactError, InvalidInput, UnsafeArtifact
from mlserve.registry import RegistryStore
from mlserve.runtimes import Runtime, detect_framework, load_runtime, pickled_framework
from mlserve.runtimes.xgboost import SERVING_THREADS, XGBoostRuntime, read_xgboost
from mlserve.training.registration import Registration, register_model

NAMES = ["age", "income", "score", "visits", "tenure"]
ROWS = 160


def with_holes(features: np.ndarray, seed: int) -> np.ndarray:
    """``features`` with about one cell in eight missing (NaN)."""
    rng = np.random.default_rng(seed)
    holed = features.copy()
    holed[rng.random(holed.shape) < 0.125] = np.nan
    return holed


@pytest.fixture(scope="module")
def binary_data() -> tuple[np.ndarray, np.ndarray]:
    """Two-class rows with missing cells, and their labels."""
    features, labels = make_classification(ROWS, len(NAMES), n_informative=3, random_state=3)
    return with_holes(features, 3), labels


@pytest.fixture(scope="module")
def three_class_data() -> tuple[np.ndarray, np.ndarray]:
    """Three-class rows with missing cells, and their labels."""
    features, labels = make_classification(
        ROWS, len(NAMES), n_informative=4, n_redundant=0, n_classes=3, random_state=4
    )
    return with_holes(features, 4), labels


@pytest.fixture(scope="module")
def regression_data() -> tuple[np.ndarray, np.ndarray]:
    """Rows with missing cells and a numeric target."""
    features, target = make_regression(ROWS, len(NAMES), noise=0.5, random_state=5)
    return with_holes(features, 5), target


def frame(features: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(features, columns=NAMES)


def register_and_load(
    store: RegistryStore, path: Path, name: str, *, safe: bool = False
) -> tuple[Runtime, Any]:
    """Register ``path`` as ``name`` with the framework judged from the file; load it back."""
    version = register_model(store, path, Registration(name=name), safe=safe)
    folder = store.local_folder(version)
    return load_runtime(folder, expected_sha256=version.sha256, safe=safe), version


def fitted(model: Any, features: np.ndarray, labels: np.ndarray, *, named: bool) -> Any:
    return model.fit(frame(features) if named else features, labels)


def test_json_binary_classifier_answers_as_xgbclassifier(
    registry_store: RegistryStore, tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = binary_data
    model = fitted(xgb.XGBClassifier(n_estimators=12, max_depth=3), features, labels, named=True)
    model.save_model(tmp_path / "model.json")
    runtime, version = register_and_load(registry_store, tmp_path / "model.json", "xgb-json")
    assert version.framework == "xgboost"
    assert runtime.signature.feature_names == NAMES
    assert runtime.classes == [0, 1]
    reloaded = xgb.XGBClassifier()
    reloaded.load_model(tmp_path / "model.json")
    expected, expected_proba = (
        reloaded.predict(frame(features)),
        reloaded.predict_proba(frame(features)),
    )
    for batch in (features, frame(features)):
        assert np.array_equal(runtime.predict(batch), expected)
        assert np.array_equal(runtime.predict_proba(batch), expected_proba)
        labels_out, proba_out = runtime.predict_with_proba(batch)
        assert np.array_equal(labels_out, expected)
        assert np.array_equal(proba_out, expected_proba)
    assert np.isnan(features).any()
    assert np.array_equal(runtime.predict_proba(features)[:, 0], 1.0 - expected_proba[:, 1])


@pytest.mark.parametrize("objective", ["multi:softprob", "multi:softmax"])
def test_ubj_multiclass_classifier_answers_as_xgbclassifier(
    registry_store: RegistryStore,
    tmp_path: Path,
    three_class_data: tuple[np.ndarray, np.ndarray],
    objective: str,
) -> None:
    features, labels = three_class_data
    model = xgb.XGBClassifier(n_estimators=8, max_depth=3, objective=objective)
    fitted(model, features, labels, named=True).save_model(tmp_path / "model.ubj")
    runtime, _ = register_and_load(registry_store, tmp_path / "model.ubj", "xgb-ubj")
    assert runtime.classes == [0, 1, 2]
    reloaded = xgb.XGBClassifier()
    reloaded.load_model(tmp_path / "model.ubj")
    expected = reloaded.predict(frame(features))
    expected_proba = reloaded.predict_proba(frame(features))
    assert len(set(expected.tolist())) == 3
    for batch in (features, frame(features)):
        assert np.array_equal(runtime.predict(batch), expected)
        assert np.array_equal(runtime.predict_proba(batch), expected_proba)
        labels_out, proba_out = runtime.predict_with_proba(batch)
        assert np.array_equal(labels_out, expected)
        assert np.array_equal(proba_out, expected_proba)


def test_joblib_classifier_answers_as_itself_and_is_served_by_xgboost(
    registry_store: RegistryStore, tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = binary_data
    model = fitted(xgb.XGBClassifier(n_estimators=10, max_depth=2), features, labels, named=False)
    joblib.dump(model, tmp_path / "model.joblib")
    assert detect_framework(tmp_path / "model.joblib") == "sklearn"
    assert pickled_framework(joblib.load(tmp_path / "model.joblib")) == "xgboost"
    runtime, version = register_and_load(registry_store, tmp_path / "model.joblib", "xgb-pickle")
    assert version.framework == "xgboost"
    assert isinstance(runtime, XGBoostRuntime)
    assert runtime.signature.feature_names == [f"f{i}" for i in range(len(NAMES))]
    assert runtime.signature.outputs == ("predict", "predict_proba")
    named_rows = pd.DataFrame(features, columns=runtime.signature.feature_names)
    for batch in (features, named_rows):
        assert np.array_equal(runtime.predict(batch), model.predict(features))
        assert np.array_equal(runtime.predict_proba(batch), model.predict_proba(features))


def test_json_regressor_answers_as_xgbregressor_and_gives_no_probabilities(
    registry_store: RegistryStore, tmp_path: Path, regression_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, target = regression_data
    model = fitted(xgb.XGBRegressor(n_estimators=15, max_depth=3), features, target, named=True)
    model.save_model(tmp_path / "model.json")
    runtime, version = register_and_load(registry_store, tmp_path / "model.json", "xgb-reg")
    assert version.signature.task == "regression"
    assert version.signature.outputs == ("predict",)
    assert not runtime.has_proba
    assert runtime.classes == []
    for batch in (features, frame(features)):
        assert np.array_equal(runtime.predict(batch), model.predict(frame(features)))
    with pytest.raises(InvalidInput, match="does not give probabilities"):
        runtime.predict_proba(features)


def test_early_stopped_model_predicts_with_its_best_iteration(
    registry_store: RegistryStore, tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = binary_data
    model = xgb.XGBClassifier(n_estimators=200, learning_rate=0.5, early_stopping_rounds=2)
    model.fit(
        features[:100], labels[:100], eval_set=[(features[100:], labels[100:])], verbose=False
    )
    assert model.best_iteration + 1 < model.get_booster().num_boosted_rounds()
    model.save_model(tmp_path / "model.json")
    runtime, _ = register_and_load(registry_store, tmp_path / "model.json", "xgb-early")
    assert np.array_equal(runtime.predict_proba(features), model.predict_proba(features))


def test_blocks_of_rows_answer_as_the_whole_and_threads_share_the_model(
    registry_store: RegistryStore, tmp_path: Path, three_class_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = three_class_data
    model = fitted(xgb.XGBClassifier(n_estimators=10), features, labels, named=True)
    model.save_model(tmp_path / "model.json")
    runtime, _ = register_and_load(registry_store, tmp_path / "model.json", "xgb-blocks")
    assert runtime.scales_with_threads
    whole = runtime.predict_proba(features)
    blocks = np.array_split(features, 7)
    assert np.array_equal(np.vstack([runtime.predict_proba(b) for b in blocks]), whole)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(runtime.predict_proba, blocks * 10))
    for round_start in range(0, len(together), len(blocks)):
        assert np.array_equal(np.vstack(together[round_start : round_start + len(blocks)]), whole)


def test_the_booster_is_set_to_the_serving_thread_count(
    tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = binary_data
    model = fitted(xgb.XGBClassifier(n_estimators=3, n_jobs=2), features, labels, named=False)
    joblib.dump(model, tmp_path / "model.joblib")
    assert XGBoostRuntime.inspect(tmp_path / "model.joblib", safe=False).n_features == len(NAMES)
    config = read_xgboost(tmp_path / "model.joblib", safe=False).booster.save_config()
    assert f'"nthread":"{SERVING_THREADS}"' in config


def test_safe_loading_refuses_the_pickle_and_takes_json_and_ubj(
    registry_store: RegistryStore, tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = binary_data
    model = fitted(xgb.XGBClassifier(n_estimators=3), features, labels, named=True)
    joblib.dump(model, tmp_path / "model.joblib")
    with pytest.raises(UnsafeArtifact, match="pickle"):
        register_model(
            registry_store, tmp_path / "model.joblib", Registration(name="unsafe"), safe=True
        )
    with pytest.raises(UnsafeArtifact, match="pickle"):
        XGBoostRuntime.inspect(tmp_path / "model.joblib", safe=True)
    for suffix in ("json", "ubj"):
        model.save_model(tmp_path / f"model.{suffix}")
        runtime, _ = register_and_load(
            registry_store, tmp_path / f"model.{suffix}", f"safe-{suffix}", safe=True
        )
        assert np.array_equal(runtime.predict(features), model.predict(frame(features)))


def test_unreadable_files_and_other_pickles_are_one_line_artifact_errors(
    tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    (tmp_path / "broken.json").write_text('{"learner": 1}')
    with pytest.raises(ArtifactError, match=r"^cannot load broken\.json: [^\n]+$"):
        XGBoostRuntime.inspect(tmp_path / "broken.json", safe=True)
    features, labels = binary_data
    joblib.dump(
        LogisticRegression().fit(np.nan_to_num(features), labels), tmp_path / "other.joblib"
    )
    with pytest.raises(ArtifactError, match="LogisticRegression, not an XGBoost"):
        XGBoostRuntime.inspect(tmp_path / "other.joblib", safe=False)


def test_rows_of_the_wrong_width_or_not_numbers_are_invalid_input(
    registry_store: RegistryStore, tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = binary_data
    model = fitted(xgb.XGBClassifier(n_estimators=3), features, labels, named=True)
    model.save_model(tmp_path / "model.json")
    runtime, _ = register_and_load(registry_store, tmp_path / "model.json", "xgb-rows")
    with pytest.raises(InvalidInput, match="expected rows of 5 features"):
        runtime.predict(features[:, :3])
    text = frame(features).astype(object)
    text.loc[0, "age"] = "old"
    with pytest.raises(InvalidInput, match="'age' holds values that are not numbers"):
        runtime.predict(text)
    text.loc[0, "age"] = None  # None in an object column is a missing value
    holed = features.copy()
    holed[0, 0] = np.nan
    expected = model.predict(frame(holed))
    assert np.array_equal(runtime.predict(text[NAMES[::-1]]), expected)  # taken by name


def test_register_without_xgboost_is_one_line_naming_the_extra(
    tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = binary_data
    fitted(xgb.XGBClassifier(n_estimators=2), features, labels, named=True).save_model(
        tmp_path / "model.json"
    )
    script = (
        "import sys\n"
        "sys.modules['xgboost'] = None\n"
        "sys.argv = ['mlserve', 'register', 'model.json', '--name', 'x']\n"
        "from mlserve.cli.main import entry\n"
        "entry()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**env, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 6, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert "pip install 'mlserve[xgboost]'" in lines[0]


def test_signature_from_data_keeps_the_boosters_order_and_profiles_the_rows(
    registry_store: RegistryStore, tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = binary_data
    model = fitted(xgb.XGBClassifier(n_estimators=4), features, labels, named=True)
    model.save_model(tmp_path / "model.json")
    data = frame(features)[NAMES[::-1]].assign(label=labels)
    request = Registration(name="xgb-data", signature_from=data, target="label")
    version = register_model(registry_store, tmp_path / "model.json", request, safe=True)
    assert version.signature.feature_names == NAMES
    assert version.signature.target == "label"
    assert version.reference_profile is not None
    runtime = load_runtime(registry_store.local_folder(version), safe=True)
    assert np.array_equal(runtime.predict(data), model.predict(frame(features)))


def test_linear_booster_answers_as_xgbclassifier_and_keeps_to_one_thread_at_a_time(
    registry_store: RegistryStore, tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = binary_data
    model = fitted(
        xgb.XGBClassifier(booster="gblinear", n_estimators=5), features, labels, named=True
    )
    model.save_model(tmp_path / "model.json")
    runtime, _ = register_and_load(registry_store, tmp_path / "model.json", "xgb-linear")
    assert not runtime.scales_with_threads
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(runtime.predict_proba, [features] * 8))
    expected = model.predict_proba(frame(features))
    assert all(np.array_equal(answer, expected) for answer in answers)
    assert np.array_equal(runtime.predict(frame(features)), model.predict(frame(features)))


def test_a_scikit_learn_regressor_stays_a_regressor_with_a_logistic_objective(
    tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = binary_data
    model = xgb.XGBRegressor(objective="binary:logistic", n_estimators=3).fit(features, labels)
    joblib.dump(model, tmp_path / "model.joblib")
    facts = XGBoostRuntime.inspect(tmp_path / "model.joblib", safe=False)
    assert facts.classes == ()
    assert not facts.has_proba
