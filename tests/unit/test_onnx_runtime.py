"""OnnxRuntime: models made by skl2onnx and by hand answer like their scikit-learn originals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlserve.errors import ArtifactError, InvalidInput
from mlserve.monitoring import describe_features
from mlserve.registry import RegistryStore
from mlserve.runtimes import load_runtime, runtime_class
from mlserve.runtimes.onnx import (
    CLASSES_KEY,
    INTRA_OP_THREADS,
    SIGNATURE_KEY,
    OnnxRuntime,
    session_options,
)
from mlserve.training.registration import Registration, register_model
from mlserve.types import MANIFEST_FILE, Signature, VersionManifest, file_sha256

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def write_version(folder: Path, model: bytes, signature: Signature) -> Path:
    """A version folder holding ``model`` as model.onnx and its manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model)
    manifest = VersionManifest(
        name="m",
        version=1,
        framework="onnx",
        model_file=path.name,
        sha256=file_sha256(path),
        signature=signature,
        created_at="2026-01-01T00:00:00+00:00",
    )
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict()), encoding="utf-8")
    return folder


def tensor_model(estimator: Any, n_features: int, **options: Any) -> bytes:
    """``estimator`` as ONNX taking one float tensor of ``n_features`` columns."""
    onx = to_onnx(
        estimator,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(estimator): options} if options else None,
        target_opset={"": 15, "ai.onnx.ml": 3},
    )
    data: bytes = onx.SerializeToString()
    return data


@pytest.fixture(scope="module")
def iris_rows(iris_features: pd.DataFrame) -> np.ndarray:
    """The iris feature rows as float64, in signature order."""
    return iris_features[FEATURES].to_numpy(dtype=np.float64)


@pytest.fixture(scope="module")
def iris_target(iris_frame: pd.DataFrame) -> np.ndarray:
    return iris_frame["species"].to_numpy()


@pytest.fixture(scope="module")
def logistic(iris_rows: np.ndarray, iris_target: np.ndarray) -> LogisticRegression:
    return LogisticRegression(max_iter=1000).fit(iris_rows, iris_target)


@pytest.fixture(scope="module")
def forest(iris_rows: np.ndarray, iris_target: np.ndarray) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=20, random_state=0).fit(iris_rows, iris_target)


def load(tmp_path: Path, model: bytes, signature: Signature, *, safe: bool = False) -> OnnxRuntime:
    runtime = load_runtime(write_version(tmp_path / "v", model, signature), safe=safe)
    assert isinstance(runtime, OnnxRuntime)
    return runtime


# -- classifiers from skl2onnx ---------------------------------------------------------------------


@pytest.mark.parametrize("zipmap", [False, True], ids=["tensor", "zipmap"])
def test_logistic_regression_answers_like_scikit_learn(
    tmp_path: Path,
    logistic: LogisticRegression,
    iris_rows: np.ndarray,
    iris_signature: Signature,
    zipmap: bool,
) -> None:
    runtime = load(tmp_path, tensor_model(logistic, 4, zipmap=zipmap), iris_signature)
    assert runtime.classes == list(logistic.classes_)
    labels, proba = runtime.predict_with_proba(iris_rows)
    np.testing.assert_array_equal(labels, logistic.predict(iris_rows))
    np.testing.assert_allclose(proba, logistic.predict_proba(iris_rows), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(runtime.predict(iris_rows), labels)
    np.testing.assert_array_equal(runtime.predict_proba(iris_rows), proba)
    assert not runtime.scales_with_threads  # a matrix product


def test_random_forest_answers_like_scikit_learn_from_a_frame_in_any_column_order(
    tmp_path: Path,
    forest: RandomForestClassifier,
    iris_rows: np.ndarray,
    iris_features: pd.DataFrame,
    iris_signature: Signature,
) -> None:
    runtime = load(tmp_path, tensor_model(forest, 4, zipmap=False), iris_signature)
    shuffled = iris_features[["petal_width", "sepal_length", "petal_length", "sepal_width"]]
    labels, proba = runtime.predict_with_proba(shuffled)
    np.testing.assert_array_equal(labels, forest.predict(iris_rows))
    np.testing.assert_allclose(proba, forest.predict_proba(iris_rows), atol=1e-5, rtol=0)
    assert runtime.scales_with_threads  # trees only: a block of rows gets the same bits
    whole = runtime.predict_proba(iris_rows)
    for block in (slice(0, 1), slice(5, 20), slice(20, 30)):
        np.testing.assert_array_equal(runtime.predict_proba(iris_rows[block]), whole[block])


def test_pipeline_with_a_one_hot_categorical_takes_one_input_per_feature(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "size": rng.normal(size=120),
            "color": rng.choice(["red", "green", "blue"], size=120).astype(object),
            "weight": rng.normal(size=120) * 5,
        }
    )
    target = np.where(frame["size"] + (frame["color"] == "red") > 0.3, "keep", "drop")
    model = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("numeric", StandardScaler(), ["size", "weight"]),
                        ("categorical", OneHotEncoder(sparse_output=False), ["color"]),
                    ]
                ),
            ),
            ("model", LogisticRegression()),
        ]
    ).fit(frame, target)
    inputs = [
        ("size", FloatTensorType([None, 1])),
        ("color", StringTensorType([None, 1])),
        ("weight", FloatTensorType([None, 1])),
    ]
    onx = to_onnx(model, initial_types=inputs, options={id(model[-1]): {"zipmap": False}})
    signature = Signature(describe_features(frame), "classification", ("predict", "predict_proba"))
    path = tmp_path / "pipeline.onnx"
    path.write_bytes(onx.SerializeToString())

    facts = OnnxRuntime.inspect(path, safe=True)
    assert facts.feature_names == ("size", "color", "weight")
    assert facts.classes == ("drop", "keep")
    assert facts.has_proba
    runtime = load(tmp_path, path.read_bytes(), signature)
    for rows in (frame, frame.to_numpy(dtype=object)):
        labels, proba = runtime.predict_with_proba(rows)
        np.testing.assert_array_equal(labels, model.predict(frame))
        np.testing.assert_allclose(proba, model.predict_proba(frame), atol=1e-5, rtol=0)


# -- regression and hand-built models --------------------------------------------------------------


def test_regressor_predicts_values_and_has_no_probabilities(
    tmp_path: Path, iris_rows: np.ndarray
) -> None:
    target = iris_rows[:, 2] * 2 - iris_rows[:, 0]
    model = RandomForestRegressor(n_estimators=10, random_state=0).fit(iris_rows, target)
    signature = Signature(tuple(describe_features(pd.DataFrame(iris_rows, columns=FEATURES))))
    runtime = load(tmp_path, tensor_model(model, 4), signature)
    values = runtime.predict(iris_rows)
    assert values.shape == (len(iris_rows),)
    assert values.dtype == np.float64
    np.testing.assert_allclose(values, model.predict(iris_rows), rtol=1e-5)
    assert not runtime.has_proba
    assert runtime.classes == []
    with pytest.raises(InvalidInput, match="does not give probabilities"):
        runtime.predict_proba(iris_rows)


def hand_built_classifier(weights: np.ndarray, dtype: int = TensorProto.FLOAT) -> bytes:
    """Softmax(X @ W) with an ArgMax label, over one 2-D tensor input ``X``."""
    n_features, n_classes = weights.shape
    numpy_type = np.float32 if dtype == TensorProto.FLOAT else np.float64
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        "hand_built",
        [helper.make_tensor_value_info("X", dtype, [None, n_features])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", dtype, [None, n_classes]),
        ],
        initializer=[onnx.numpy_helper.from_array(weights.astype(numpy_type), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.DOUBLE], ids=["f32", "f64"])
def test_hand_built_model_with_one_tensor_input_gets_default_names_and_classes(
    tmp_path: Path, registry_store: RegistryStore, dtype: int
) -> None:
    weights = np.array([[1.0, -1.0, 0.5], [0.0, 2.0, -1.0]])
    path = tmp_path / "hand.onnx"
    path.write_bytes(hand_built_classifier(weights, dtype))

    facts = OnnxRuntime.inspect(path, safe=True)
    assert facts.feature_names is None
    assert facts.n_features == 2
    assert facts.classes == (0, 1, 2)
    assert facts.has_proba
    assert facts.signature is None
    version = register_model(registry_store, path, Registration(name="hand"), safe=True)
    assert version.framework == "onnx"
    assert version.signature.feature_names == ["f0", "f1"]
    assert version.signature.task == "classification"

    runtime = load_runtime(registry_store.local_folder(version), safe=True)
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    logits = rows @ weights
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels, proba = runtime.predict_with_proba(rows)
    np.testing.assert_array_equal(labels, logits.argmax(axis=1))
    np.testing.assert_allclose(proba, expected, atol=1e-6)


def test_signature_and_classes_in_metadata_are_the_models_own(tmp_path: Path) -> None:
    model = onnx.load_model_from_string(hand_built_classifier(np.eye(2)))
    signature = Signature(tuple(describe_features(pd.DataFrame({"a": [1.0], "b": [2.0]}))))
    helper.set_model_props(
        model, {SIGNATURE_KEY: json.dumps(signature.to_dict()), CLASSES_KEY: '["no", "yes"]'}
    )
    path = tmp_path / "meta.onnx"
    path.write_bytes(model.SerializeToString())
    facts = OnnxRuntime.inspect(path, safe=True)
    assert facts.signature == signature
    assert facts.classes == ("no", "yes")
    runtime = load(tmp_path, path.read_bytes(), signature)
    np.testing.assert_array_equal(runtime.predict(np.array([[0.0, 3.0], [3.0, 0.0]])), [1, 0])
    assert runtime.classes == ["no", "yes"]


# -- loading, checks and options -------------------------------------------------------------------


def test_safe_loading_accepts_onnx_and_the_loader_finds_the_runtime(
    tmp_path: Path, logistic: LogisticRegression, iris_signature: Signature
) -> None:
    assert runtime_class("onnx") is OnnxRuntime
    runtime = load(tmp_path, tensor_model(logistic, 4, zipmap=False), iris_signature, safe=True)
    assert runtime.framework == "onnx"
    assert not runtime.needs_process


def test_rows_of_the_wrong_width_are_refused(
    tmp_path: Path, logistic: LogisticRegression, iris_signature: Signature
) -> None:
    runtime = load(tmp_path, tensor_model(logistic, 4, zipmap=False), iris_signature)
    with pytest.raises(InvalidInput, match="expected rows of 4 features"):
        runtime.predict(np.zeros((2, 3)))


def test_a_signature_of_another_width_is_refused_at_load(
    tmp_path: Path, logistic: LogisticRegression
) -> None:
    three = Signature(tuple(describe_features(pd.DataFrame({"a": [1.0], "b": [1.0], "c": [1.0]}))))
    with pytest.raises(ArtifactError, match="takes 4 features, the signature names 3"):
        load(tmp_path, tensor_model(logistic, 4), three)


def test_a_file_that_is_not_onnx_is_an_artifact_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match=r"broken\.onnx"):
        OnnxRuntime.inspect(path, safe=True)


def test_session_options_use_one_thread_and_do_not_spin() -> None:
    options = session_options()
    assert options.intra_op_num_threads == INTRA_OP_THREADS == 1
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
