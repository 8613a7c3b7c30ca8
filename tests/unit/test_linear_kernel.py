"""The linear kernel answers bit-for-bit as scikit-learn does, and steps aside when it cannot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.datasets import make_classification
from sklearn.linear_model import (
    LogisticRegression,
    Perceptron,
    RidgeClassifier,
    SGDClassifier,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from mlserve.errors import InvalidInput
from mlserve.runtimes import SklearnRuntime
from mlserve.runtimes.linear import LinearKernel
from mlserve.types import Feature, Signature

WIDTH = 5
SIGNATURE = Signature(inputs=tuple(Feature(name=f"x{i}", dtype="float64") for i in range(WIDTH)))


def _data(classes: int) -> tuple[np.ndarray, np.ndarray]:
    return make_classification(
        n_samples=300, n_features=WIDTH, n_informative=4, n_redundant=0, n_classes=classes,
        random_state=0,
    )  # fmt: skip


@pytest.fixture(scope="module")
def models() -> dict[str, object]:
    x2, y2 = _data(2)
    x3, y3 = _data(3)
    labels = np.array(["no", "yes"], dtype=object)[y2]
    return {
        "lr-binary": LogisticRegression().fit(x2, y2),
        "lr-multi": LogisticRegression(max_iter=500).fit(x3, y3),
        "lr-labels": LogisticRegression().fit(x2, labels),
        "lr-frame": LogisticRegression().fit(pd.DataFrame(x2, columns=SIGNATURE.feature_names), y2),
        "ridge": RidgeClassifier().fit(x3, y3),
        "sgd": SGDClassifier(random_state=0).fit(x2, y2),
        "svc": LinearSVC().fit(x3, y3),
        "perceptron": Perceptron(random_state=0).fit(x2, y2),
        "pipeline": Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression())]).fit(
            x3, y3
        ),
    }


rows = arrays(
    np.float64,
    st.tuples(st.integers(1, 40), st.just(WIDTH)),
    elements=st.floats(-1e8, 1e8, allow_nan=False, allow_infinity=False),
)


@pytest.mark.parametrize(
    "name",
    [
        "lr-binary",
        "lr-multi",
        "lr-labels",
        "lr-frame",
        "sgd",
        "svc",
        "perceptron",
        "pipeline",
    ],
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(x=rows)
def test_kernel_predicts_exactly_as_scikit_learn(
    models: dict[str, object], name: str, x: np.ndarray
) -> None:
    model = models[name]
    runtime = SklearnRuntime(model, SIGNATURE)
    assert runtime.uses_linear_kernel
    given_x = pd.DataFrame(x, columns=SIGNATURE.feature_names) if name == "lr-frame" else x
    expected = model.predict(given_x)  # type: ignore[attr-defined]
    got = runtime.predict(x)
    assert got.dtype == expected.dtype
    assert np.array_equal(got, expected)
    # Batch scoring hands over column-major matrices; a frame of them is what sklearn sees.
    assert np.array_equal(runtime.predict(np.asfortranarray(x)), expected)
    if hasattr(model, "predict_proba"):
        assert np.array_equal(runtime.predict_proba(x), model.predict_proba(given_x))  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["lr-binary", "lr-multi", "lr-labels", "pipeline"])
def test_logistic_regression_probabilities_come_from_the_kernel(
    models: dict[str, object], name: str
) -> None:
    model = models[name]
    final = model[-1] if isinstance(model, Pipeline) else model
    kernel = LinearKernel.of(final)
    assert kernel is not None
    assert kernel.has_proba
    x = np.random.default_rng(3).normal(size=(50, WIDTH))
    inner = model[:-1].transform(x) if isinstance(model, Pipeline) else x
    assert np.array_equal(kernel.predict_proba(inner), final.predict_proba(inner))
    assert (
        kernel.predict_proba(inner).flags.c_contiguous
        == final.predict_proba(inner).flags.c_contiguous
    )


def test_non_finite_rows_go_to_scikit_learn_and_its_error(models: dict[str, object]) -> None:
    runtime = SklearnRuntime(models["lr-binary"], SIGNATURE)
    x = np.zeros((2, WIDTH))
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        runtime.predict(x)


def test_wrong_width_is_refused_before_the_kernel(models: dict[str, object]) -> None:
    runtime = SklearnRuntime(models["lr-binary"], SIGNATURE)
    with pytest.raises(InvalidInput, match="expected rows of 5 features"):
        runtime.predict(np.zeros((1, WIDTH + 1)))


def test_integer_rows_are_answered_as_scikit_learn_answers_them(
    models: dict[str, object],
) -> None:
    model = models["lr-multi"]
    runtime = SklearnRuntime(model, SIGNATURE)
    x = np.arange(4 * WIDTH).reshape(4, WIDTH) - 7  # int64: the kernel leaves it to sklearn
    assert np.array_equal(runtime.predict(x), model.predict(x))  # type: ignore[attr-defined]


class _Overriding(LogisticRegression):
    def predict(self, x):  # type: ignore[no-untyped-def]
        return super().predict(x)


def test_a_classifier_overriding_predict_gets_no_kernel(models: dict[str, object]) -> None:
    x, y = _data(2)
    assert LinearKernel.of(_Overriding().fit(x, y)) is None
    ridge = models["ridge"]  # RidgeClassifier predicts its own way (multilabel targets)
    assert LinearKernel.of(ridge) is None
    rows = np.random.default_rng(5).normal(size=(20, WIDTH))
    assert np.array_equal(SklearnRuntime(ridge, SIGNATURE).predict(rows), ridge.predict(rows))  # type: ignore[attr-defined]


def test_a_sparse_coef_gets_no_kernel() -> None:
    x, y = _data(2)
    model = LogisticRegression().fit(x, y).sparsify()
    assert LinearKernel.of(model) is None
    assert not SklearnRuntime(model, SIGNATURE).uses_linear_kernel


def test_the_probe_refuses_a_kernel_that_disagrees() -> None:
    x, y = _data(2)
    model = LogisticRegression().fit(x, y)
    other = LogisticRegression(C=1e-4).fit(x, y)
    kernel = LinearKernel(other, with_proba=True)  # another model's coefficients
    assert not kernel.agrees_with(model, probabilities=False) or not kernel.agrees_with(
        model, probabilities=True
    )
    assert kernel.agrees_with(other, probabilities=True)


@pytest.mark.parametrize("name", ["lr-binary", "lr-multi", "pipeline"])
def test_predictions_with_probabilities_are_the_two_calls(
    models: dict[str, object], name: str
) -> None:
    runtime = SklearnRuntime(models[name], SIGNATURE)
    x = np.random.default_rng(4).normal(size=(25, WIDTH))
    predicted, probabilities = runtime.predict_with_proba(x)
    assert np.array_equal(predicted, runtime.predict(x))
    assert np.array_equal(probabilities, runtime.predict_proba(x))
