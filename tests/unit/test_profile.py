"""Dataset description: feature kinds, reference profiles and fingerprints."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlserve.monitoring import (
    build_reference_profile,
    describe_features,
    feature_kind,
    fingerprint_frame,
)
from mlserve.monitoring.profile import MAX_CATEGORIES
from mlserve.types import Feature


@pytest.fixture
def mixed_frame() -> pd.DataFrame:
    """Six rows with a float (one missing), int, bool and string (one missing) column."""
    return pd.DataFrame(
        {
            "income": [1.5, 2.5, np.nan, 4.0, 5.0, 6.0],
            "age": [20, 30, 40, 50, 60, 70],
            "is_member": [True, False, True, True, False, True],
            "city": ["Paris", "Lyon", None, "Paris", "Nice", "Paris"],
        }
    )


# -- describe_features --------------------------------------------------------------------------


def test_describe_features_gives_kinds_dtypes_and_nullability_in_column_order(
    mixed_frame: pd.DataFrame,
) -> None:
    assert describe_features(mixed_frame) == (
        Feature("income", "float64", "numeric", (), nullable=True),
        Feature("age", "int64", "numeric", (), nullable=False),
        Feature("is_member", "bool", "boolean", (), nullable=False),
        Feature("city", "string", "categorical", ("Lyon", "Nice", "Paris"), nullable=True),
    )


def test_categories_are_strings_sorted_and_capped() -> None:
    values = [f"c{i:05d}" for i in range(MAX_CATEGORIES + 200)]
    frame = pd.DataFrame({"code": values[::-1], "mixed": [1, "a", 2.5] * ((len(values)) // 3)})
    code, mixed = describe_features(frame)
    assert len(code.categories) == MAX_CATEGORIES
    assert list(code.categories) == sorted(values)[:MAX_CATEGORIES]
    assert mixed.kind == "categorical"
    assert mixed.categories == ("1", "2.5", "a")


@pytest.mark.parametrize(
    ("series", "kind"),
    [
        (pd.Series([1, 2]), "numeric"),
        (pd.Series([1.0, None]), "numeric"),
        (pd.Series([True, False]), "boolean"),
        (pd.Series([True, None], dtype="boolean"), "boolean"),
        (pd.Series(["a", "b"]), "categorical"),
        (pd.Series(["a", "b"], dtype="category"), "categorical"),
        (pd.Series(pd.to_datetime(["2026-01-01"])), "categorical"),
    ],
)
def test_feature_kind_follows_dtype(series: pd.Series, kind: str) -> None:
    assert feature_kind(series) == kind


# -- build_reference_profile --------------------------------------------------------------------


def test_profile_statistics_match_the_data(mixed_frame: pd.DataFrame) -> None:
    profile = build_reference_profile(mixed_frame)
    assert profile["rows"] == 6
    income = profile["features"]["income"]
    present = np.array([1.5, 2.5, 4.0, 5.0, 6.0])
    assert (income["kind"], income["count"], income["nulls"]) == ("numeric", 5, 1)
    assert income["mean"] == pytest.approx(present.mean())
    assert income["std"] == pytest.approx(present.std())
    assert (income["min"], income["max"]) == (1.5, 6.0)
    assert income["quantiles"]["0.5"] == 4.0
    assert sum(income["histogram"]["counts"]) == 5
    assert len(income["histogram"]["edges"]) == len(income["histogram"]["counts"]) + 1
    assert profile["features"]["city"] == {
        "kind": "categorical",
        "count": 5,
        "nulls": 1,
        "frequencies": {"Paris": 3, "Lyon": 1, "Nice": 1},
    }
    assert profile["features"]["is_member"]["frequencies"] == {"True": 4, "False": 2}


def test_profile_is_strict_json(mixed_frame: pd.DataFrame) -> None:
    profile = build_reference_profile(mixed_frame)
    text = json.dumps(profile, allow_nan=False)
    assert json.loads(text) == profile
    city = profile["sample"]["columns"].index("city")
    assert None in [row[city] for row in profile["sample"]["rows"]]


@pytest.mark.parametrize(("rows", "sample_rows", "kept"), [(50, 10, 10), (5, 10, 5), (0, 10, 0)])
def test_profile_sample_is_bounded(rows: int, sample_rows: int, kept: int) -> None:
    frame = pd.DataFrame({"x": np.arange(rows, dtype=float), "y": ["a"] * rows})
    profile = build_reference_profile(frame, sample_rows=sample_rows)
    assert profile["rows"] == rows
    assert profile["sample"]["columns"] == ["x", "y"]
    assert len(profile["sample"]["rows"]) == kept
    sampled_x = [row[0] for row in profile["sample"]["rows"]]
    assert len(set(sampled_x)) == kept  # drawn without replacement
    assert set(sampled_x) <= set(frame["x"])


def test_profile_sample_is_seeded() -> None:
    frame = pd.DataFrame({"x": np.arange(200.0)})
    first = build_reference_profile(frame, sample_rows=20, seed=1)
    again = build_reference_profile(frame, sample_rows=20, seed=1)
    other = build_reference_profile(frame, sample_rows=20, seed=2)
    assert first["sample"] == again["sample"]
    assert first["sample"] != other["sample"]


def test_profile_of_an_all_missing_numeric_column_has_empty_stats() -> None:
    profile = build_reference_profile(pd.DataFrame({"x": [np.nan, np.nan]}))
    x = profile["features"]["x"]
    assert (x["count"], x["nulls"], x["mean"], x["quantiles"]) == (0, 2, None, {})
    json.dumps(profile, allow_nan=False)


# -- fingerprint_frame --------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
columns = st.lists(finite | st.just(float("nan")), min_size=1, max_size=30)


def test_fingerprint_is_stable_for_equal_data(mixed_frame: pd.DataFrame) -> None:
    copy = mixed_frame.copy(deep=True)
    reindexed = mixed_frame.set_axis(range(100, 106))
    assert fingerprint_frame(mixed_frame) == fingerprint_frame(copy)
    assert fingerprint_frame(mixed_frame) == fingerprint_frame(reindexed)
    assert fingerprint_frame(mixed_frame).startswith("sha256:")


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.assign(age=f["age"] + [0, 0, 0, 0, 0, 1]),
        lambda f: f.assign(city=f["city"].replace("Nice", "Nantes")),
        lambda f: f.rename(columns={"age": "years"}),
        lambda f: f.astype({"age": "float64"}),
        lambda f: f[["age", "income", "is_member", "city"]],
        lambda f: f.iloc[::-1],
        lambda f: f.iloc[:-1],
    ],
    ids=["value", "category", "name", "dtype", "column-order", "row-order", "fewer-rows"],
)
def test_fingerprint_changes_when_the_data_changes(
    mixed_frame: pd.DataFrame, change: Callable[[pd.DataFrame], pd.DataFrame]
) -> None:
    assert fingerprint_frame(change(mixed_frame)) != fingerprint_frame(mixed_frame)


@given(values=columns, data=st.data())
def test_fingerprint_is_equal_for_equal_values_and_changes_with_any_value(
    values: list[float], data: st.DataObject
) -> None:
    frame = pd.DataFrame({"x": values})
    assert fingerprint_frame(pd.DataFrame({"x": list(values)})) == fingerprint_frame(frame)
    position = data.draw(st.integers(0, len(values) - 1))
    replacement = data.draw(finite.filter(lambda v: v != values[position]))
    changed = list(values)
    changed[position] = replacement
    assert fingerprint_frame(pd.DataFrame({"x": changed})) != fingerprint_frame(frame)


def test_profile_of_a_column_with_infinities_is_strict_json() -> None:
    profile = build_reference_profile(pd.DataFrame({"x": [1.0, np.inf, 2.0]}))
    json.dumps(profile, allow_nan=False)
