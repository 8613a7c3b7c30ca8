"""The LightGBM runtime: models trained here, registered, loaded, and answering as LightGBM does."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestRegressor

from mlserve.errors import ArtifactError, InvalidInput, UnsafeArtifact
from mlserve.registry import RegistryStore
from mlserve.runtimes import Runtime, detect_framework, load_runtime, pickled_framework
from mlserve.runtimes.lightgbm import LightGBMRuntime
from mlserve.training.registration import Registration, register_model

NAMES = ["age", "income", "score", "visits", "tenure"]
ROWS = 200


def with_holes(features: np.ndarray, seed: int) -> np.ndarray:
    """``features`` with about one cell in eight missing (NaN)."""
    rng = np.random.default_rng(seed)
    holed = features.copy()
    holed[rng.random(holed.shape) < 0.125] = np.nan
    return holed


@pytest.fixture(scope="module")
def binary_data() -> tuple[np.ndarray, np.ndarray]:
    """Two-class rows with missing cells, and their labels."""
    features, labels = make_classification(ROWS, len(NAMES), n_informative=3, random_state=6)
    return with_holes(features, 6), labels


@pytest.fixture(scope="module")
def three_class_data() -> tuple[np.ndarray, np.ndarray]:
    """Three-class rows with missing cells, and their labels."""
    features, labels = make_classification(
        ROWS, len(NAMES), n_informative=4, n_redundant=0, n_classes=3, random_state=7
    )
    return with_holes(features, 7), labels


@pytest.fixture(scope="module")
def regression_data() -> tuple[np.ndarray, np.ndarray]:
    """Rows with missing cells and a numeric target."""
    features, target = make_regression(ROWS, len(NAMES), noise=0.5, random_state=8)
    return with_holes(features, 8), target


def frame(features: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(features, columns=NAMES)


def register_and_load(
    store: RegistryStore, path: Path, name: str, *, safe: bool = False
) -> tuple[Runtime, Any]:
    """Register ``path`` as ``name`` with the framework judged from the file; load it back."""
    version = register_model(store, path, Registration(name=name), safe=safe)
    folder = store.local_folder(version)
    return load_runtime(folder, expected_sha256=version.sha256, safe=safe), version


def test_text_binary_classifier_answers_as_lgbmclassifier(
    registry_store: RegistryStore, tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = binary_data
    model = lgb.LGBMClassifier(n_estimators=15, verbose=-1).fit(frame(features), labels)
    model.booster_.save_model(tmp_path / "model.txt")
    assert detect_framework(tmp_path / "model.txt") == "lightgbm"
    runtime, version = register_and_load(registry_store, tmp_path / "model.txt", "lgb-text")
    assert version.framework == "lightgbm"
    assert runtime.signature.feature_names == NAMES
    assert runtime.classes == [0, 1]
    expected = model.predict(frame(features))
    expected_proba = model.predict_proba(frame(features))
    assert len(set(expected.tolist())) == 2
    for batch in (features, frame(features)):
        assert np.array_equal(runtime.predict(batch), expected)
        assert np.array_equal(runtime.predict_proba(batch), expected_proba)
        labels_out, proba_out = runtime.predict_with_proba(batch)
        assert np.array_equal(labels_out, expected)
        assert np.array_equal(proba_out, expected_proba)


def test_text_multiclass_classifier_answers_as_lgbmclassifier(
    registry_store: RegistryStore, tmp_path: Path, three_class_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = three_class_data
    model = lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(frame(features), labels)
    model.booster_.save_model(tmp_path / "model.txt")
    runtime, _ = register_and_load(registry_store, tmp_path / "model.txt", "lgb-multi")
    assert runtime.classes == [0, 1, 2]
    expected = model.predict(frame(features))
    expected_proba = model.predict_proba(frame(features))
    for batch in (features, frame(features)):
        assert np.array_equal(runtime.predict(batch), expected)
        assert np.array_equal(runtime.predict_proba(batch), expected_proba)


def test_text_regressor_trained_on_an_array_gets_placeholder_free_names(
    registry_store: RegistryStore, tmp_path: Path, regression_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, target = regression_data
    booster = lgb.train(
        {"objective": "regression", "verbose": -1}, lgb.Dataset(features, target), 20
    )
    booster.save_model(tmp_path / "model.txt")
    runtime, version = register_and_load(registry_store, tmp_path / "model.txt", "lgb-reg")
    assert runtime.signature.feature_names == [f"f{i}" for i in range(len(NAMES))]
    assert version.signature.task == "regression"
    assert not runtime.has_proba
    expected = booster.predict(features)
    named_rows = pd.DataFrame(features, columns=runtime.signature.feature_names)
    for batch in (features, named_rows):
        assert np.array_equal(runtime.predict(batch), expected)
    with pytest.raises(InvalidInput, match="does not give probabilities"):
        runtime.predict_proba(features)


def test_joblib_classifier_with_text_labels_answers_as_itself(
    registry_store: RegistryStore, tmp_path: Path, three_class_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = three_class_data
    words = np.array(["bronze", "gold", "silver"])[labels]
    model = lgb.LGBMClassifier(n_estimators=8, verbose=-1).fit(frame(features), words)
    joblib.dump(model, tmp_path / "model.joblib")
    assert pickled_framework(joblib.load(tmp_path / "model.joblib")) == "lightgbm"
    runtime, version = register_and_load(registry_store, tmp_path / "model.joblib", "lgb-pickle")
    assert version.framework == "lightgbm"
    assert isinstance(runtime, LightGBMRuntime)
    assert runtime.classes == ["bronze", "gold", "silver"]
    assert version.signature.classes == ("bronze", "gold", "silver")
    for batch in (features, frame(features)):
        assert np.array_equal(runtime.predict(batch), model.predict(frame(features)))
        assert np.array_equal(runtime.predict_proba(batch), model.predict_proba(frame(features)))


def test_joblib_regressor_answers_as_itself(
    registry_store: RegistryStore, tmp_path: Path, regression_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, target = regression_data
    model = lgb.LGBMRegressor(n_estimators=12, verbose=-1).fit(features, target)
    joblib.dump(model, tmp_path / "model.pkl")
    runtime, _ = register_and_load(registry_store, tmp_path / "model.pkl", "lgb-pickle-reg")
    assert np.array_equal(runtime.predict(features), model.predict(features))


def test_blocks_of_rows_answer_as_the_whole_and_threads_share_the_model(
    registry_store: RegistryStore, tmp_path: Path, three_class_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = three_class_data
    model = lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(frame(features), labels)
    model.booster_.save_model(tmp_path / "model.txt")
    runtime, _ = register_and_load(registry_store, tmp_path / "model.txt", "lgb-blocks")
    assert runtime.scales_with_threads
    whole = runtime.predict_proba(features)
    blocks = np.array_split(features, 7)
    assert np.array_equal(np.vstack([runtime.predict_proba(b) for b in blocks]), whole)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(runtime.predict_proba, blocks * 10))
    for round_start in range(0, len(together), len(blocks)):
        assert np.array_equal(np.vstack(together[round_start : round_start + len(blocks)]), whole)


def test_safe_loading_refuses_the_pickle_and_takes_the_text_file(
    registry_store: RegistryStore, tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = binary_data
    model = lgb.LGBMClassifier(n_estimators=4, verbose=-1).fit(frame(features), labels)
    joblib.dump(model, tmp_path / "model.joblib")
    with pytest.raises(UnsafeArtifact, match="pickle"):
        register_model(
            registry_store, tmp_path / "model.joblib", Registration(name="unsafe"), safe=True
        )
    with pytest.raises(UnsafeArtifact, match="pickle"):
        LightGBMRuntime.inspect(tmp_path / "model.joblib", safe=True)
    model.booster_.save_model(tmp_path / "model.txt")
    runtime, _ = register_and_load(registry_store, tmp_path / "model.txt", "lgb-safe", safe=True)
    assert np.array_equal(runtime.predict(features), model.predict(frame(features)))


def test_files_that_are_not_lightgbm_models_are_quiet_one_line_artifact_errors(
    tmp_path: Path,
    regression_data: tuple[np.ndarray, np.ndarray],
    capfd: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "notes.txt").write_text("not a model\n")
    with pytest.raises(ArtifactError, match=r"^notes\.txt is not a LightGBM text model file$"):
        LightGBMRuntime.inspect(tmp_path / "notes.txt", safe=True)
    features, target = regression_data
    booster = lgb.train(
        {"objective": "regression", "verbose": -1}, lgb.Dataset(features, target), 5
    )
    whole = booster.model_to_string().encode()
    (tmp_path / "cut.txt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ArtifactError, match=r"^cut\.txt is cut short: its trees do not end$"):
        LightGBMRuntime.inspect(tmp_path / "cut.txt", safe=True)
    assert capfd.readouterr().err == ""  # LightGBM never saw these files
    (tmp_path / "hollow.txt").write_text("tree\nversion=v4\nend of trees\n")
    with pytest.raises(ArtifactError, match=r"^cannot load hollow\.txt: [^\n]+$"):
        LightGBMRuntime.inspect(tmp_path / "hollow.txt", safe=True)
    forest = RandomForestRegressor(n_estimators=2).fit(np.nan_to_num(features), target)
    joblib.dump(forest, tmp_path / "forest.joblib")
    with pytest.raises(ArtifactError, match="RandomForestRegressor, not a LightGBM"):
        LightGBMRuntime.inspect(tmp_path / "forest.joblib", safe=False)


def test_rows_of_the_wrong_width_or_not_numbers_are_invalid_input(
    registry_store: RegistryStore, tmp_path: Path, binary_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, labels = binary_data
    model = lgb.LGBMClassifier(n_estimators=4, verbose=-1).fit(frame(features), labels)
    model.booster_.save_model(tmp_path / "model.txt")
    runtime, _ = register_and_load(registry_store, tmp_path / "model.txt", "lgb-rows")
    with pytest.raises(InvalidInput, match="expected rows of 5 features"):
        runtime.predict(features[:, :4])
    with pytest.raises(InvalidInput, match="rows lack the feature"):
        runtime.predict(frame(features).drop(columns=["score"]))
    text = frame(features).astype(object)
    text.loc[3, "visits"] = "many"
    with pytest.raises(InvalidInput, match="'visits' holds values that are not numbers"):
        runtime.predict_proba(text)


def test_register_without_lightgbm_is_one_line_naming_the_extra(
    tmp_path: Path, regression_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features, target = regression_data
    booster = lgb.train(
        {"objective": "regression", "verbose": -1}, lgb.Dataset(features, target), 2
    )
    booster.save_model(tmp_path / "model.txt")
    script = (
        "import sys\n"
        "sys.modules['lightgbm'] = None\n"
        "sys.argv = ['mlserve', 'register', 'model.txt', '--name', 'x']\n"
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
    assert "pip install 'mlserve[lightgbm]'" in lines[0]
