"""The forest kernel answers bit-for-bit as scikit-learn does, and steps aside when it cannot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlserve.errors import InvalidInput
from mlserve.runtimes import SklearnRuntime
from mlserve.runtimes.forest import ForestKernel
from mlserve.types import Feature, Signature

WIDTH = 6
SIGNATURE = Signature(inputs=tuple(Feature(name=f"x{i}", dtype="float64") for i in range(WIDTH)))


def _classification(classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    return make_classification(
        n_samples=400, n_features=WIDTH, n_informative=4, n_classes=classes, random_state=0
    )


@pytest.fixture(scope="module")
def forests() -> dict[str, object]:
    x, y = _classification()
    xr, yr = make_regression(n_samples=400, n_features=WIDTH, random_state=0)
    labels = np.array(["ant", "bee", "cat"], dtype=object)[y]
    return {
        "rf": RandomForestClassifier(n_estimators=25, max_depth=6, random_state=0).fit(x, y),
        "rf-labels": RandomForestClassifier(n_estimators=10, random_state=1).fit(x, labels),
        "et": ExtraTreesClassifier(n_estimators=15, random_state=0).fit(x, y),
        "rf-reg": RandomForestRegressor(n_estimators=20, max_depth=5, random_state=0).fit(xr, yr),
        "et-reg": ExtraTreesRegressor(n_estimators=10, random_state=0).fit(xr, yr),
        "rf-frame": RandomForestClassifier(n_estimators=10, random_state=0).fit(
            pd.DataFrame(x, columns=SIGNATURE.feature_names), y
        ),
    }


rows = arrays(
    np.float64,
    st.tuples(st.integers(1, 40), st.just(WIDTH)),
    elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32),
)


@pytest.mark.parametrize("name", ["rf", "rf-labels", "et", "rf-reg", "et-reg", "rf-frame"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=rows)
def test_runtime_answers_exactly_as_the_estimator(
    forests: dict[str, object], name: str, x: np.ndarray
) -> None:
    forest = forests[name]
    runtime = SklearnRuntime(forest, SIGNATURE)
    assert runtime.uses_forest_kernel
    frame = pd.DataFrame(x, columns=SIGNATURE.feature_names)
    expected = forest.predict(frame if name == "rf-frame" else x)  # type: ignore[attr-defined]
    got = runtime.predict(x)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    if hasattr(forest, "predict_proba"):
        wanted = forest.predict_proba(frame if name == "rf-frame" else x)  # type: ignore[attr-defined]
        assert np.array_equal(runtime.predict_proba(frame), wanted)  # bitwise, not approximately


@pytest.mark.parametrize("name", ["rf", "rf-labels", "et", "rf-frame"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=rows)
def test_predictions_with_probabilities_are_the_two_calls_in_one_pass(
    forests: dict[str, object], name: str, x: np.ndarray
) -> None:
    runtime = SklearnRuntime(forests[name], SIGNATURE)
    kernel = runtime._kernel
    assert isinstance(kernel, ForestKernel)
    passes = []
    walk = kernel.predict_proba

    def counted(rows: np.ndarray) -> np.ndarray:
        passes.append(len(rows))
        return walk(rows)

    for given_rows in (x, pd.DataFrame(x, columns=SIGNATURE.feature_names)):
        kernel.predict_proba = counted  # type: ignore[method-assign]  # count the tree walks
        predicted, probabilities = runtime.predict_with_proba(given_rows)
        kernel.predict_proba = walk  # type: ignore[method-assign]
        assert passes == [len(x)]
        passes.clear()
        expected = runtime.predict(given_rows)
        assert predicted.dtype == expected.dtype
        assert np.array_equal(predicted, expected)
        assert np.array_equal(probabilities, runtime.predict_proba(given_rows))


def test_predictions_with_probabilities_fall_back_to_two_calls(
    forests: dict[str, object],
) -> None:
    x = np.random.default_rng(2).normal(size=(30, WIDTH))
    x[4, 1] = np.nan  # the kernel refuses it: scikit-learn's trees route missing values
    forest = forests["rf"]
    predicted, probabilities = SklearnRuntime(forest, SIGNATURE).predict_with_proba(x)
    assert np.array_equal(predicted, forest.predict(x))  # type: ignore[attr-defined]
    assert np.array_equal(probabilities, forest.predict_proba(x))  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match="no predict_proba"):
        SklearnRuntime(forests["rf-reg"], SIGNATURE).predict_with_proba(x[:3])


def test_rows_at_split_thresholds_land_on_the_same_side(forests: dict[str, object]) -> None:
    forest = forests["rf"]
    tree = forest.estimators_[0].tree_  # type: ignore[attr-defined]
    x = np.zeros((8, WIDTH))
    node = 0
    feature, threshold = int(tree.feature[node]), float(tree.threshold[node])
    for i, value in enumerate(
        [threshold, np.nextafter(np.float32(threshold), np.float32(np.inf)), threshold - 1e-9]
    ):
        x[i, feature] = value
    runtime = SklearnRuntime(forest, SIGNATURE)
    assert np.array_equal(runtime.predict_proba(x), forest.predict_proba(x))  # type: ignore[attr-defined]


def test_pipeline_ending_in_a_forest_uses_the_kernel_after_its_transforms() -> None:
    x, y = _classification(classes=2)
    frame = pd.DataFrame(x, columns=[*SIGNATURE.feature_names[:-1], "colour"])
    frame["colour"] = np.where(x[:, -1] > 0, "red", "blue")
    columns = list(frame.columns)
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), columns[:-1]),
                        ("cat", OneHotEncoder(sparse_output=False), ["colour"]),
                    ]
                ),
            ),
            ("forest", RandomForestClassifier(n_estimators=12, random_state=0)),
        ]
    ).fit(frame, y)
    signature = Signature(
        inputs=(
            *(Feature(name=c, dtype="float64") for c in columns[:-1]),
            Feature(name="colour", dtype="object", kind="categorical", categories=("blue", "red")),
        )
    )
    runtime = SklearnRuntime(pipeline, signature)
    assert runtime.uses_forest_kernel
    np.testing.assert_array_equal(runtime.predict(frame), pipeline.predict(frame))
    assert np.array_equal(runtime.predict_proba(frame), pipeline.predict_proba(frame))


def test_non_finite_rows_get_the_estimators_own_answer(forests: dict[str, object]) -> None:
    """scikit-learn validates NaN and infinity itself; the kernel leaves those rows to it."""
    forest = forests["rf"]
    runtime = SklearnRuntime(forest, SIGNATURE)
    x = np.zeros((2, WIDTH))
    x[1, 2] = np.nan
    # RandomForest trees route NaN (missing-value support): the same answer as the estimator.
    np.testing.assert_array_equal(runtime.predict(x), forest.predict(x))  # type: ignore[attr-defined]
    x[1, 2] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        forest.predict(x)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="infinity"):
        runtime.predict(x)


def test_wrong_width_is_refused_before_the_kernel(forests: dict[str, object]) -> None:
    runtime = SklearnRuntime(forests["rf"], SIGNATURE)
    with pytest.raises(InvalidInput, match="expected rows of 6 features"):
        runtime.predict(np.zeros((1, WIDTH + 1)))


def test_only_plain_single_output_forests_get_a_kernel() -> None:
    x, y = _classification(classes=2)

    class Tweaked(RandomForestClassifier):
        def predict(self, X):  # type: ignore[no-untyped-def]  # noqa: N803
            return super().predict(X)

    assert ForestKernel.of(GradientBoostingClassifier(n_estimators=3).fit(x, y)) is None
    assert ForestKernel.of(Tweaked(n_estimators=3).fit(x, y)) is None
    assert ForestKernel.of(RandomForestClassifier(n_estimators=3)) is None  # not fitted
    two_outputs = RandomForestClassifier(n_estimators=3).fit(x, np.column_stack([y, 1 - y]))
    assert ForestKernel.of(two_outputs) is None
    assert ForestKernel.of(RandomForestClassifier(n_estimators=3).fit(x, y)) is not None


def test_the_load_probe_tells_a_kernel_from_another_forests_answers() -> None:
    """The probe ``ForestKernel.of`` runs before handing out a kernel: it passes for the forest
    the kernel was built from and fails against a forest that answers differently (as the
    estimator would if a scikit-learn release ever changed its arithmetic)."""
    x, y = _classification()
    xr, yr = make_regression(n_samples=400, n_features=WIDTH, random_state=0)
    for fit in (
        lambda seed: RandomForestClassifier(n_estimators=8, random_state=seed).fit(x, y),
        lambda seed: RandomForestRegressor(n_estimators=8, random_state=seed).fit(xr, yr),
    ):
        forest, other = fit(0), fit(1)
        kernel = ForestKernel(forest)
        assert kernel.agrees_with(forest)
        assert not kernel.agrees_with(other)


def test_the_runtime_imports_the_forest_kernel_for_exactly_the_forest_classes() -> None:
    # The runtime tells forests by class name, to import scikit-learn's ensembles only for them.
    from mlserve.runtimes.forest import FORESTS
    from mlserve.runtimes.sklearn import FOREST_CLASS_NAMES

    assert {cls.__name__ for cls in FORESTS} == FOREST_CLASS_NAMES
