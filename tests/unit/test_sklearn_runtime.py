"""SklearnRuntime input handling, skops/joblib loading and runtime selection."""

from __future__ import annotations

import json
import operator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from mlserve.errors import ArtifactError, ArtifactIntegrityError, InvalidInput, UnsafeArtifact
from mlserve.runtimes import SklearnRuntime, dump_sklearn, load_runtime, load_sklearn
from mlserve.types import MANIFEST_FILE, Feature, Signature

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture
def runtime(tiny_classifier: Pipeline, iris_signature: Signature) -> SklearnRuntime:
    """The fitted iris pipeline (it knows its feature names) wrapped in a runtime."""
    return SklearnRuntime(tiny_classifier, iris_signature)


@pytest.fixture
def array_runtime(iris_features: pd.DataFrame, iris_signature: Signature) -> SklearnRuntime:
    """A classifier fitted on a bare numpy array, so it has no feature names."""
    target = (iris_features["petal_length"] > 3).astype(int).to_numpy()
    model = LogisticRegression().fit(iris_features.to_numpy(), target)
    return SklearnRuntime(model, iris_signature)


# -- prediction ---------------------------------------------------------------------------------


def test_predicts_numpy_rows_in_signature_order(
    runtime: SklearnRuntime, tiny_classifier: Pipeline, iris_features: pd.DataFrame
) -> None:
    predictions = runtime.predict(iris_features.to_numpy())
    assert predictions.shape == (len(iris_features),)
    np.testing.assert_array_equal(predictions, tiny_classifier.predict(iris_features))


def test_frame_columns_are_reordered_by_signature_and_extras_ignored(
    runtime: SklearnRuntime, tiny_classifier: Pipeline, iris_features: pd.DataFrame
) -> None:
    shuffled = iris_features[["petal_width", "sepal_length", "petal_length", "sepal_width"]].copy()
    shuffled["customer_id"] = range(len(shuffled))
    shuffled.insert(0, "note", "vip")
    expected = tiny_classifier.predict(iris_features)
    np.testing.assert_array_equal(runtime.predict(shuffled), expected)
    np.testing.assert_allclose(
        runtime.predict_proba(shuffled), tiny_classifier.predict_proba(iris_features)
    )


def test_reordering_actually_matters_for_this_model(
    runtime: SklearnRuntime, tiny_classifier: Pipeline, iris_features: pd.DataFrame
) -> None:
    # Guards the test above: feeding the columns in the wrong order would change predictions.
    reversed_rows = iris_features[FEATURES[::-1]].to_numpy()
    assert not np.array_equal(
        runtime.predict(reversed_rows), tiny_classifier.predict(iris_features)
    )


def test_one_dimensional_input_is_one_row(
    runtime: SklearnRuntime, tiny_classifier: Pipeline, iris_features: pd.DataFrame
) -> None:
    row = iris_features.to_numpy()[0]
    assert runtime.predict(row).tolist() == tiny_classifier.predict(iris_features.iloc[:1]).tolist()


def test_predict_proba_rows_follow_classes(
    runtime: SklearnRuntime, tiny_classifier: Pipeline, iris_features: pd.DataFrame
) -> None:
    probabilities = runtime.predict_proba(iris_features.to_numpy())
    assert runtime.has_proba
    assert runtime.classes == ["setosa", "versicolor", "virginica"]
    assert probabilities.shape == (len(iris_features), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    best = [runtime.classes[i] for i in probabilities.argmax(axis=1)]
    assert best == tiny_classifier.predict(iris_features).tolist()


def test_numeric_strings_are_accepted(
    runtime: SklearnRuntime, tiny_classifier: Pipeline, iris_features: pd.DataFrame
) -> None:
    as_text = iris_features.astype(str)
    np.testing.assert_array_equal(runtime.predict(as_text), tiny_classifier.predict(iris_features))
    np.testing.assert_array_equal(
        runtime.predict(as_text.to_numpy()), tiny_classifier.predict(iris_features)
    )


def test_regressor_has_no_probabilities(iris_features: pd.DataFrame) -> None:
    model = Ridge().fit(iris_features[FEATURES[:3]], iris_features["petal_width"])
    signature = Signature(tuple(Feature(name, "float64") for name in FEATURES[:3]), "regression")
    regressor = SklearnRuntime(model, signature)
    assert not regressor.has_proba
    assert regressor.classes == []
    assert regressor.predict(iris_features).shape == (len(iris_features),)
    with pytest.raises(InvalidInput, match="does not give probabilities"):
        regressor.predict_proba(iris_features)


def test_model_fitted_on_arrays_accepts_frames_and_arrays(
    array_runtime: SklearnRuntime, iris_features: pd.DataFrame
) -> None:
    from_array = array_runtime.predict(iris_features.to_numpy())
    from_frame = array_runtime.predict(iris_features[FEATURES[::-1]])
    np.testing.assert_array_equal(from_array, from_frame)


# -- invalid input ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3), (2, 5), (5,), (2, 4, 1), (0,)])
def test_wrong_shape_is_invalid_input(runtime: SklearnRuntime, shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput, match="expected rows of 4 features") as caught:
        runtime.predict(np.ones(shape))
    assert "sepal_length" in str(caught.value)
    assert str(list(shape if len(shape) > 1 else (1, *shape))) in str(caught.value)


# -- loading ------------------------------------------------------------------------------------


def test_skops_round_trip_loads_safely(
    tmp_path: Path, tiny_classifier: Pipeline, iris_features: pd.DataFrame
) -> None:
    path = dump_sklearn(tiny_classifier, tmp_path / "model.skops")
    loaded = load_sklearn(path, safe=True)
    assert isinstance(loaded, Pipeline)
    np.testing.assert_allclose(
        loaded.predict_proba(iris_features), tiny_classifier.predict_proba(iris_features)
    )


def test_joblib_round_trip_loads_when_not_safe(
    tmp_path: Path, tiny_classifier: Pipeline, iris_features: pd.DataFrame
) -> None:
    path = dump_sklearn(tiny_classifier, tmp_path / "model.joblib")
    loaded = load_sklearn(path, safe=False)
    np.testing.assert_array_equal(
        loaded.predict(iris_features), tiny_classifier.predict(iris_features)
    )


def test_safe_loading_refuses_a_joblib_file(classifier_file: Path) -> None:
    with pytest.raises(UnsafeArtifact, match=r"model\.joblib is a pickle"):
        load_sklearn(classifier_file, safe=True)


def test_safe_loading_refuses_untrusted_skops_types(
    tmp_path: Path, iris_features: pd.DataFrame
) -> None:
    model = Pipeline([("negate", FunctionTransformer(operator.neg)), ("fit", LogisticRegression())])
    model.fit(iris_features, (iris_features["petal_length"] > 3).astype(int))
    path = dump_sklearn(model, tmp_path / "model.skops")
    with pytest.raises(UnsafeArtifact, match=r"_operator\.neg"):
        load_sklearn(path, safe=True)
    assert load_sklearn(path, safe=False).predict(iris_features).shape == (len(iris_features),)


def test_corrupt_joblib_file_is_an_artifact_error(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(ArtifactError, match=r"cannot load model\.joblib"):
        load_sklearn(path, safe=False)


def test_load_runtime_loads_a_verified_folder(
    version_folder: Path, tiny_classifier: Pipeline, iris_features: pd.DataFrame
) -> None:
    loaded = load_runtime(version_folder)
    assert isinstance(loaded, SklearnRuntime)
    assert loaded.signature.feature_names == FEATURES
    np.testing.assert_array_equal(
        loaded.predict(iris_features), tiny_classifier.predict(iris_features)
    )


def test_load_runtime_with_safe_loading_refuses_a_joblib_folder(version_folder: Path) -> None:
    with pytest.raises(UnsafeArtifact):
        load_runtime(version_folder, safe=True)


def test_load_runtime_checks_integrity_first(version_folder: Path) -> None:
    (version_folder / "model.joblib").write_bytes(b"swapped")
    with pytest.raises(ArtifactIntegrityError):
        load_runtime(version_folder)


def test_load_runtime_rejects_unknown_frameworks(version_folder: Path) -> None:
    manifest_path = version_folder / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["framework"] = "tensorflow"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="no runtime for framework 'tensorflow'") as caught:
        load_runtime(version_folder)
    assert "sklearn" in str(caught.value)  # lists what is known
