"""probe_limits asks a loaded model what it takes: each answer must be what the estimator itself
does with such a row, checked here by calling the estimator's own predict, never by belief."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from trained_models import TrainedModel

from mlserve.inputs import InputPolicy, ModelLimits, RowChecker, build_checker, probe_limits
from mlserve.inputs.probe import reference_batch, reference_row
from mlserve.types import Feature, Signature

MODELS = [
    "train-pipeline-forest",
    "train-pipeline-logistic",
    "forest",
    "forest-trained-with-nan",
    "logistic",
    "hist-gradient-boosting",
    "imputes-one-column",
]


def estimator_takes(model: TrainedModel, row: dict[str, Any]) -> bool:
    """True when the estimator's own predict (and predict_proba) answers ``row`` with finite
    numbers. scikit-learn refuses input with ValueError; its warnings are not the question."""
    frame = pd.DataFrame([row], columns=model.signature.feature_names)
    estimator = model.estimator
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            outputs = [np.asarray(estimator.predict(frame))]
            if hasattr(estimator, "predict_proba"):
                outputs.append(np.asarray(estimator.predict_proba(frame)))
        except ValueError:
            return False
    return all(o.dtype.kind not in "fc" or bool(np.isfinite(o).all()) for o in outputs)


def base_row(model: TrainedModel) -> dict[str, Any]:
    """A row the model takes: the first row of its reference sample."""
    sample = model.profile["sample"]
    row = dict(zip(sample["columns"], sample["rows"][0], strict=True))
    assert estimator_takes(model, row)
    return row


def numeric_names(model: TrainedModel) -> list[str]:
    """The model's numeric features (the ones a float32 limit is about)."""
    return [f.name for f in model.signature.inputs if f.kind == "numeric"]


@pytest.mark.parametrize("name", MODELS)
def test_the_probe_says_a_feature_is_filled_exactly_when_the_estimator_takes_it_missing(
    models: dict[str, TrainedModel], name: str
) -> None:
    model = models[name]
    limits = probe_limits(model.runtime, model.profile)
    for feature in model.signature.feature_names:
        takes = estimator_takes(model, {**base_row(model), feature: np.nan})
        assert (feature in limits.fills_missing) is takes, feature


@pytest.mark.parametrize("name", MODELS)
def test_the_probe_says_float32_exactly_when_the_estimator_refuses_what_float32_cannot_hold(
    models: dict[str, TrainedModel], name: str
) -> None:
    model = models[name]
    limits = probe_limits(model.runtime, model.profile)
    huge = {**base_row(model), **dict.fromkeys(numeric_names(model), 1e300)}
    assert limits.float32 is not estimator_takes(model, huge)


@pytest.mark.parametrize("name", MODELS)
def test_the_checker_built_on_the_probe_refuses_what_the_estimator_refuses(
    models: dict[str, TrainedModel], name: str
) -> None:
    model = models[name]
    rows_checker = build_checker(model.runtime, model.profile, InputPolicy())
    base = base_row(model)
    rows = [{**base, f: np.nan} for f in model.signature.feature_names]
    rows += [{**base, f: 1e300} for f in numeric_names(model)]
    checked = rows_checker.check_records(rows)
    for position, row in enumerate(rows):
        assert bool(checked.rejected[position]) is not estimator_takes(model, row), row


def test_the_models_probed_here_give_both_answers_to_each_question(
    models: dict[str, TrainedModel],
) -> None:
    # Otherwise the tests above could pass on a probe that always says the same thing.
    answers = [probe_limits(m.runtime, m.profile) for m in models.values()]
    assert {bool(a.fills_missing) for a in answers} == {True, False}
    assert {a.float32 for a in answers} == {True, False}
    assert any(
        0 < len(a.fills_missing) < len(m.signature.inputs)
        for a, m in zip(answers, models.values(), strict=True)
    )


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="known limit (docs/architecture.md, Input checking): the range rule bounds the raw "
    "value, but the pipeline scales it first: a feature with spread 0.001 turns 1e36 into "
    "~1e39, which the float32 forest refuses although the checker accepted the row; the "
    "model's own refusal (refusal_reason) then rejects it, worded alike in every door",
)
def test_a_row_the_checker_accepts_is_one_the_estimator_takes(narrow_forest: TrainedModel) -> None:
    rows_checker = build_checker(narrow_forest.runtime, narrow_forest.profile, InputPolicy())
    row = {**base_row(narrow_forest), "a": 1e36}
    checked = rows_checker.check_records([row])
    assert estimator_takes(narrow_forest, row) or bool(checked.rejected[0])


def test_a_model_that_refuses_its_own_reference_row_gets_the_cautious_limits(
    log_model: TrainedModel,
) -> None:
    signature = Signature(
        inputs=(Feature("a", "float64", nullable=True), Feature("d", "float64", nullable=False))
    )
    model = TrainedModel(log_model.estimator, signature, {})
    assert not estimator_takes(model, reference_row(signature, None))
    limits = probe_limits(model.runtime, None)
    assert limits == ModelLimits(fills_missing=frozenset({"a"}), float32=True)


def test_the_reference_sample_gives_the_probe_a_row_the_model_takes(
    log_model: TrainedModel,
) -> None:
    limits = probe_limits(log_model.runtime, log_model.profile)
    base = reference_row(log_model.signature, log_model.profile)
    assert estimator_takes(log_model, base)
    for feature in ("a", "d"):
        takes = estimator_takes(log_model, {**base, feature: np.nan})
        assert (feature in limits.fills_missing) is takes
    assert limits.float32 is not estimator_takes(log_model, {**base, "a": 1e300, "d": 1e300})


MIXED = Signature(
    inputs=(
        Feature("n", "float64"),
        Feature("flag", "bool", kind="boolean"),
        Feature("color", "string", kind="categorical", categories=("red", "blue")),
        Feature("free", "string", kind="categorical"),
    )
)


def test_the_reference_row_has_a_plain_value_for_every_feature() -> None:
    assert reference_row(MIXED, None) == {"n": 0.0, "flag": 0.0, "color": "red", "free": "unknown"}


def test_the_reference_row_takes_each_features_first_known_value_from_the_sample() -> None:
    profile = {
        "sample": {
            "columns": ["color", "n", "other"],
            "rows": [[None, None, 1], ["blue", 2.5, 2], ["red", 3.5, 3]],
        }
    }
    assert reference_row(MIXED, profile) == {
        "n": 2.5,
        "flag": 0.0,
        "color": "blue",
        "free": "unknown",
    }


def test_the_reference_batch_is_one_row_as_the_model_takes_it() -> None:
    batch = reference_batch(MIXED, None)
    assert isinstance(batch, pd.DataFrame)
    assert list(batch.columns) == ["n", "flag", "color", "free"]
    assert batch.to_numpy().tolist() == [[0.0, 0.0, "red", "unknown"]]
    numeric = Signature(inputs=(Feature("n", "float64"), Feature("flag", "bool", kind="boolean")))
    matrix = reference_batch(numeric, {"sample": {"columns": ["n"], "rows": [[4.0]]}})
    assert isinstance(matrix, np.ndarray)
    assert matrix.dtype == np.float64
    assert matrix.tolist() == [[4.0, 0.0]]


def test_build_checker_keeps_the_policy_and_the_probed_limits(
    models: dict[str, TrainedModel],
) -> None:
    model = models["imputes-one-column"]
    policy = InputPolicy(unknown_categories="accept", extra_columns="reject")
    rows_checker = build_checker(model.runtime, model.profile, policy)
    assert isinstance(rows_checker, RowChecker)
    assert rows_checker.policy == policy
    assert rows_checker.limits == probe_limits(model.runtime, model.profile)
