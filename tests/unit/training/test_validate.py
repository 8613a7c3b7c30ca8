"""validate_dataset finds every problem at once; infer_task and clean_dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.pandas import column, data_frames, range_indexes

from mlserve.training.validate import (
    MIN_ROWS,
    ValidationReport,
    clean_dataset,
    infer_task,
    validate_dataset,
)


def codes(report: ValidationReport) -> set[str]:
    return {p.code for p in report.problems}


def labelled_frame(rows: int = 12) -> pd.DataFrame:
    """A clean two-class frame that validates without findings (``rows`` a multiple of 6)."""
    return pd.DataFrame(
        {
            "x": np.arange(rows, dtype=float) * 1.5,
            "colour": ["red", "blue", "green"] * (rows // 3),
            "y": ["a", "b"] * (rows // 2),
        }
    )


def test_clean_frame_has_no_findings() -> None:
    report = validate_dataset(labelled_frame(), "y")
    assert report.problems == []
    assert report.task == "classification"
    assert report.drop_columns == []


@pytest.mark.parametrize(
    "frame",
    [pd.DataFrame(), pd.DataFrame({"x": [], "y": []}), pd.DataFrame(index=range(3))],
    ids=["nothing", "columns-no-rows", "rows-no-columns"],
)
def test_empty_data_is_an_error(frame: pd.DataFrame) -> None:
    report = validate_dataset(frame, "y")
    assert [(p.severity, p.code) for p in report.problems] == [("error", "empty")]
    assert "no rows" in report.errors[0].message


def test_missing_target_names_the_column_and_lists_the_columns() -> None:
    report = validate_dataset(labelled_frame(), "label")
    assert [p.code for p in report.errors] == ["missing_target"]
    message = report.errors[0].message
    assert "'label' not found" in message
    assert "x, colour, y" in message


def test_target_without_any_value_is_an_error() -> None:
    frame = labelled_frame().assign(y=None)
    report = validate_dataset(frame, "y")
    assert [p.code for p in report.errors] == ["target_all_null"]


def test_rows_without_target_are_counted_and_dropped() -> None:
    frame = labelled_frame(18)
    frame.loc[[0, 4], "y"] = None
    report = validate_dataset(frame, "y")
    assert report.errors == []
    (warning,) = report.warnings
    assert warning.code == "rows_without_target"
    assert warning.message.startswith("2 row(s) have no 'y'")
    assert clean_dataset(frame, "y", report)["y"].notna().all()


def test_duplicate_rows_are_counted() -> None:
    frame = labelled_frame()
    frame = pd.concat([frame, frame.iloc[[1, 2, 2]]], ignore_index=True)
    report = validate_dataset(frame, "y")
    assert [(p.severity, p.code) for p in report.problems] == [("warning", "duplicate_rows")]
    assert report.problems[0].message.startswith("3 duplicate row(s)")


@pytest.mark.parametrize(
    "values", [["same"] * 12, [7.0] * 12, [None] * 12], ids=["text", "number", "all-null"]
)
def test_constant_columns_are_dropped(values: list[object]) -> None:
    frame = labelled_frame().assign(source=values)
    report = validate_dataset(frame, "y")
    assert report.errors == []
    assert codes(report) == {"constant_column"}
    assert report.drop_columns == ["source"]
    assert "'source' is constant" in report.warnings[0].message


def test_classes_with_too_few_rows_are_listed() -> None:
    frame = labelled_frame()
    frame.loc[0, "y"] = "rare"
    report = validate_dataset(frame, "y")
    assert [p.code for p in report.errors] == ["rare_classes"]
    assert "'rare' (1 row)" in report.errors[0].message


def test_a_single_class_is_an_error() -> None:
    report = validate_dataset(labelled_frame().assign(y="a"), "y")
    assert "single_class" in codes(report)
    assert "one class ('a')" in report.errors[0].message


@pytest.mark.parametrize(
    ("leak", "task"),
    [
        (lambda y: y.copy(), None),
        (lambda y: y.map({"a": "yes", "b": "no"}), None),
        (lambda y: y.map({"a": 0, "b": 1}), None),
    ],
    ids=["copy", "relabelled-text", "relabelled-codes"],
)
def test_columns_identical_to_a_class_target_are_leakage(leak, task) -> None:
    frame = labelled_frame()
    frame["answer"] = leak(frame["y"])
    report = validate_dataset(frame, "y", task)
    assert [p.code for p in report.errors] == ["leakage"]
    assert "'answer' is identical to the target" in report.errors[0].message
    assert "--drop answer" in report.errors[0].message


def test_a_rescaled_regression_target_is_leakage() -> None:
    rng = np.random.default_rng(0)
    price = rng.uniform(100, 500, 30).round(2)
    frame = pd.DataFrame({"size": rng.uniform(1, 9, 30), "cents": price * 100 + 5, "price": price})
    report = validate_dataset(frame, "price")
    assert report.task == "regression"
    assert [(p.code, "'cents'" in p.message) for p in report.errors] == [("leakage", True)]


def test_a_feature_merely_correlated_with_the_target_is_not_leakage() -> None:
    rng = np.random.default_rng(1)
    size = rng.uniform(1, 9, 40)
    frame = pd.DataFrame({"size": size, "price": 30 * size + rng.normal(0, 5, 40)})
    assert validate_dataset(frame, "price").errors == []


def test_too_few_usable_rows_counts_rows_after_dropping_duplicates() -> None:
    frame = labelled_frame(6)
    frame = pd.concat([frame, frame], ignore_index=True)  # 12 rows, 6 distinct
    report = validate_dataset(frame, "y")
    assert "too_few_rows" in codes(report)
    message = next(p.message for p in report.errors if p.code == "too_few_rows")
    assert message == f"only 6 usable row(s); at least {MIN_ROWS} needed"


def test_a_target_alone_has_no_features() -> None:
    report = validate_dataset(labelled_frame()[["y"]], "y")
    assert "no_features" in codes(report)


def test_a_text_target_cannot_be_regressed() -> None:
    report = validate_dataset(labelled_frame(), "y", task="regression")
    assert [p.code for p in report.errors] == ["target_not_numeric"]
    assert "'y' is not numeric" in report.errors[0].message


def test_every_problem_is_reported_together() -> None:
    frame = labelled_frame(12)
    frame["const"] = 1
    frame["leak"] = frame["y"]
    frame.loc[0, "y"] = "rare"
    frame.loc[0, "leak"] = "rare"
    frame.loc[[3, 5, 7], "y"] = None
    frame = pd.concat([frame, frame.iloc[[1]]], ignore_index=True)

    report = validate_dataset(frame, "y")

    assert {p.code for p in report.warnings} == {
        "rows_without_target",
        "duplicate_rows",
        "constant_column",
    }
    assert {p.code for p in report.errors} == {"leakage", "rare_classes", "too_few_rows"}


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["yes", "no", None], "classification"),
        ([True, False, True], "classification"),
        ([0, 1, 2, 1], "classification"),
        ([0.0, 1.0, None, 1.0], "classification"),
        (list(range(25)), "regression"),
        ([0.5, 1.25, 3.0], "regression"),
        ([1.0, np.inf, 2.0], "regression"),
    ],
    ids=["text", "bool", "few-ints", "whole-floats", "many-ints", "fractions", "infinite"],
)
def test_infer_task(values: list[object], task: str) -> None:
    assert infer_task(pd.Series(values)) == task


def test_clean_dataset_drops_unlabelled_rows_duplicates_and_constant_columns() -> None:
    frame = labelled_frame(12).assign(const="k")
    frame.loc[2, "y"] = None
    frame = pd.concat([frame, frame.iloc[[0, 0, 2]]], ignore_index=True)
    report = validate_dataset(frame, "y")

    cleaned = clean_dataset(frame, "y", report)

    assert list(cleaned.columns) == ["x", "colour", "y"]
    assert len(cleaned) == 11
    assert list(cleaned.index) == list(range(11))
    assert not cleaned.duplicated().any()
    assert cleaned["y"].notna().all()


CELLS = st.one_of(
    st.none(),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["a", "b", "c", ""]),
    st.booleans(),
)
TARGETS = st.one_of(
    st.none(),
    st.integers(0, 2),
    st.sampled_from(["x", "z"]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=2),
)
SMALL_FRAMES = data_frames(
    columns=[
        column("y", elements=TARGETS),
        column("mixed", elements=CELLS),
        column("number", elements=st.floats(allow_nan=True, allow_infinity=False)),
        column("flag", dtype=bool),
    ],
    index=range_indexes(0, 25),
)


@settings(max_examples=200, deadline=None)
@given(frame=SMALL_FRAMES, task=st.sampled_from([None, "classification", "regression"]))
def test_validate_never_raises_and_cleaning_follows_the_report(
    frame: pd.DataFrame, task: str | None
) -> None:
    report = validate_dataset(frame, "y", task)  # type: ignore[arg-type]  # sampled literals

    assert set(report.errors) | set(report.warnings) == set(report.problems)
    if report.task is None:  # stopped early: nothing to train on at all
        assert report.errors
        return
    cleaned = clean_dataset(frame, "y", report)
    labelled = int(frame["y"].notna().sum())
    duplicates = next(
        (int(p.message.split()[0]) for p in report.warnings if p.code == "duplicate_rows"), 0
    )
    assert len(cleaned) == labelled - duplicates  # the warnings tell what cleaning drops
    assert cleaned["y"].notna().all()
    assert list(cleaned.columns) == [c for c in frame.columns if c not in report.drop_columns]


def test_identifier_like_columns_are_warned_about_and_kept() -> None:
    rows = 24
    rng = np.random.default_rng(3)
    frame = labelled_frame(rows).assign(
        customer=[f"c{i:04d}" for i in rng.permutation(rows)],  # text, one value per row
        row=np.arange(rows),  # consecutive whole numbers
        customer_id=rng.choice(100_000, rows, replace=False),  # named like one
        income=rng.normal(50_000, 9_000, rows),  # unique, but real numbers: a measurement
        visits=rng.choice(100_000, rows, replace=False),  # unique whole numbers, named plainly
    )
    report = validate_dataset(frame, "y")
    flagged = [p.message.split("'")[1] for p in report.warnings if p.code == "identifier_column"]
    assert flagged == ["customer", "row", "customer_id"]
    assert "--drop customer_id" in report.warnings[-1].message
    assert report.errors == []
    assert "customer_id" not in report.drop_columns  # a warning: the user decides


def test_a_category_column_with_repeats_is_no_identifier() -> None:
    report = validate_dataset(labelled_frame(24).assign(code=["a1", "b2"] * 12), "y")
    assert "identifier_column" not in codes(report)
