"""RowChecker: one verdict per row whatever container the row came in, rows judged alone, and the
rule order of ``checker.py`` (extra columns, then features in signature order)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from input_cells import (
    CATEGORIES,
    GOOD_CELLS,
    GOOD_ROW,
    LIMITS,
    MIXED,
    NUMERIC,
    POLICIES,
    cells,
    checker,
    csv_columns,
    model_values,
    object_array,
    verdicts,
)

from mlserve.errors import InvalidInput
from mlserve.inputs import CheckedRows, InputPolicy, ModelLimits, RowChecker
from mlserve.types import MAX_CATEGORIES, Feature, Signature

PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXTRA_REASON = "unknown column(s) {}, and extra columns are refused for this model"


def mixed_columns(rows: int, *, nested: bool = False) -> st.SearchStrategy[dict[str, list[Any]]]:
    """Columns of the mixed signature, ``rows`` long, of every kind of cell.

    The boolean column gets no integers but 0 and 1: a column of numbers alone quotes them
    as floats (see test_an_integer_is_quoted_as_written_whatever_the_other_rows_hold).
    """

    def column(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
        return st.lists(strategy, min_size=rows, max_size=rows)

    return st.fixed_dictionaries(
        {
            "a": column(st.one_of(GOOD_CELLS["a"], cells(nested=nested))),
            "b": column(
                st.one_of(GOOD_CELLS["b"], cells(nested=nested).filter(is_not_a_refused_integer))
            ),
            "c": column(st.one_of(GOOD_CELLS["c"], cells(nested=nested))),
        }
    )


def row_values(checked: CheckedRows, row: int) -> list[Any]:
    """One row as the model sees it, NaN as None."""
    batch = checked.batch
    values = batch.iloc[row].tolist() if isinstance(batch, pd.DataFrame) else batch[row].tolist()
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]


def flagged(checked: CheckedRows, row: int) -> set[str]:
    """Features of ``row`` flagged as holding an unknown category."""
    return {name for name, mask in checked.unknown_categories.items() if mask[row]}


def is_not_a_refused_integer(cell: Any) -> bool:
    """False for an integer other than 0 and 1 (which a boolean feature refuses, quoting it)."""
    if isinstance(cell, bool | np.bool_) or not isinstance(cell, int | np.integer):
        return True
    return int(cell) in (0, 1)


def records_of(columns: dict[str, list[Any]], rows: int) -> list[dict[str, Any]]:
    """The same rows as one mapping per row."""
    return [{name: values[i] for name, values in columns.items()} for i in range(rows)]


def unknown_masks(checked: CheckedRows) -> dict[str, list[bool]]:
    """Which accepted rows hold an unknown category, by feature."""
    return {name: mask.tolist() for name, mask in checked.unknown_categories.items()}


@PROPERTY
@given(data=st.data(), rows=st.integers(1, 6), limits=LIMITS, policy=POLICIES)
def test_every_container_gives_the_same_verdicts_and_values(
    data: st.DataObject, rows: int, limits: ModelLimits, policy: InputPolicy
) -> None:
    # Python lists (JSON), numpy object arrays (OIP BYTES, stored rows), Arrow text read back
    # from the CSV pandas writes for them (CSV bodies and files), and records (JSON records).
    columns = data.draw(mixed_columns(rows))
    rows_checker = checker(MIXED, limits, policy)
    as_lists = rows_checker.check_columns(columns, rows)
    doors = {
        "object arrays": rows_checker.check_columns(
            {n: object_array(v) for n, v in columns.items()}, rows
        ),
        "csv text": rows_checker.check_columns(csv_columns(columns), rows),
        "records": rows_checker.check_records(records_of(columns, rows)),
    }
    for door, checked in doors.items():
        assert verdicts(checked) == verdicts(as_lists), door
        assert model_values(checked) == model_values(as_lists), door
        assert unknown_masks(checked) == unknown_masks(as_lists), door


@PROPERTY
@given(data=st.data(), rows=st.integers(1, 6), limits=LIMITS, policy=POLICIES)
def test_lists_and_objects_get_the_same_verdict_in_every_python_container(
    data: st.DataObject, rows: int, limits: ModelLimits, policy: InputPolicy
) -> None:
    # Lists and objects only come in JSON (and so in Python containers); text cannot hold them.
    columns = data.draw(mixed_columns(rows, nested=True))
    rows_checker = checker(MIXED, limits, policy)
    as_lists = rows_checker.check_columns(columns, rows)
    as_objects = rows_checker.check_columns({n: object_array(v) for n, v in columns.items()}, rows)
    as_records = rows_checker.check_records(records_of(columns, rows))
    for checked in (as_objects, as_records):
        assert verdicts(checked) == verdicts(as_lists)
        assert model_values(checked) == model_values(as_lists)


NUMBERS = st.one_of(
    st.none(),
    st.just(math.nan),
    st.floats(),
    st.integers(-(10**15), 10**15),
    st.sampled_from([0, 1, 0.0, 1.0, -0.0, 2, 0.5, 1e39, -3.5e38, 1e308, math.inf]),
)


@PROPERTY
@given(data=st.data(), rows=st.integers(1, 6), limits=LIMITS, policy=POLICIES)
def test_a_float64_matrix_gives_the_verdicts_of_the_same_numbers_in_any_column_form(
    data: st.DataObject, rows: int, limits: ModelLimits, policy: InputPolicy
) -> None:
    # An all-numeric model's rows as a matrix (OIP FP64 tensors, batch chunks), typed numpy
    # and Arrow columns (Parquet), and the Python numbers they came from.
    # The matrix holds floats, so the Python rows it is compared with hold the same floats.
    columns = {
        name: [
            None if v is None else float(v)
            for v in data.draw(st.lists(NUMBERS, min_size=rows, max_size=rows))
        ]
        for name in ("a", "b")
    }
    matrix = np.array(
        [[math.nan if v is None else v for v in columns[n]] for n in ("a", "b")],
        dtype=np.float64,
    ).T.copy()
    rows_checker = checker(NUMERIC, limits, policy)
    as_lists = rows_checker.check_columns(columns, rows)
    doors = {
        "matrix": rows_checker.check_matrix(matrix),
        "numpy columns": rows_checker.check_columns({"a": matrix[:, 0], "b": matrix[:, 1]}, rows),
        "arrow columns": rows_checker.check_columns(
            {n: pa.array(columns[n], type=pa.float64()) for n in ("a", "b")}, rows
        ),
        "csv text": rows_checker.check_columns(csv_columns(columns), rows),
    }
    for door, checked in doors.items():
        assert verdicts(checked) == verdicts(as_lists), door
        assert model_values(checked) == model_values(as_lists), door


@PROPERTY
@given(data=st.data(), rows=st.integers(1, 6), limits=LIMITS, policy=POLICIES)
def test_an_accepted_row_gives_the_model_only_values_it_takes(
    data: st.DataObject, rows: int, limits: ModelLimits, policy: InputPolicy
) -> None:
    columns = data.draw(mixed_columns(rows, nested=True))
    rows_checker = checker(MIXED, limits, policy)
    checked = rows_checker.check_columns(columns, rows)
    for row in checked.accepted_positions().tolist():
        a, b, c = row_values(checked, row)
        for name, value in (("a", a), ("b", b), ("c", c)):
            assert value is not None or rows_checker.takes_missing(name), (name, row)
        assert a is None or math.isfinite(a)
        if a is not None and limits.float32:
            with np.errstate(over="ignore"):
                assert np.isfinite(np.float32(a)), a
        assert b in (None, 0.0, 1.0)
        assert c is None or isinstance(c, str)
        if c is not None and policy.unknown_categories == "reject":
            assert c in CATEGORIES
        unknown = c is not None and c not in CATEGORIES
        assert ("c" in flagged(checked, row)) is unknown


def test_typed_arrow_columns_read_like_the_same_python_values() -> None:
    # Parquet files give typed columns: int codes for a categorical, bools, ints for numbers.
    typed = {
        "a": pa.array([1, None, 2**53 + 1, -5, 0], pa.int64()),
        "b": pa.array([True, None, False, True, True]),
        "c": pa.array([3, 3, None, 7, 3], pa.int64()),
    }
    python = {name: column.to_pylist() for name, column in typed.items()}
    for limits in (ModelLimits(), ModelLimits(fills_missing=frozenset({"a", "b", "c"}))):
        rows_checker = checker(limits=limits)
        from_arrow = rows_checker.check_columns(typed, 5)
        from_python = rows_checker.check_columns(python, 5)
        assert verdicts(from_arrow) == verdicts(from_python)
        assert model_values(from_arrow) == model_values(from_python)
    assert verdicts(from_arrow) == (
        [False, False, False, True, False],
        [(3, "feature 'c' has an unknown category: '7' (known: x, y, 3, 2.5, True)")],
    )
    assert model_values(from_arrow)[0] == [1.0, 1.0, "3"]


@pytest.mark.parametrize("cell", [2, -1, 10**17, np.int64(3)], ids=repr)
def test_an_integer_is_quoted_as_written_whatever_the_other_rows_hold(cell: Any) -> None:
    expected = {0: f"feature 'b' is not a boolean: {str(int(cell))!r}"}
    good = {"a": [1.0, 1.0], "c": ["x", "x"]}
    rows_checker = checker()
    beside_text = rows_checker.check_columns({**good, "b": [cell, "yes"]}, 2)
    assert beside_text.reasons == expected
    doors = {
        "csv text": csv_columns({"a": [1.0], "b": [cell], "c": ["x"]}),
        "arrow int64": {"a": [1.0], "b": pa.array([int(cell)], pa.int64()), "c": ["x"]},
        "numpy int64": {"a": [1.0], "b": np.array([int(cell)], np.int64), "c": ["x"]},
        "json list": {"a": [1.0], "b": [cell], "c": ["x"]},
    }
    for door, columns in doors.items():
        assert rows_checker.check_columns(columns, 1).reasons == expected, door


@PROPERTY
@given(data=st.data(), rows=st.integers(2, 6), limits=LIMITS, policy=POLICIES)
def test_a_rows_verdict_and_value_do_not_depend_on_the_other_rows(
    data: st.DataObject, rows: int, limits: ModelLimits, policy: InputPolicy
) -> None:
    columns = data.draw(mixed_columns(rows, nested=True))
    rows_checker = checker(MIXED, limits, policy)
    whole = rows_checker.check_columns(columns, rows)
    for row in range(rows):
        alone = rows_checker.check_columns({n: [v[row]] for n, v in columns.items()}, 1)
        assert bool(alone.rejected[0]) == bool(whole.rejected[row])
        assert alone.reasons.get(0) == whole.reasons.get(row)
        if not alone.rejected[0]:
            assert row_values(alone, 0) == row_values(whole, row)
            assert flagged(alone, 0) == flagged(whole, row)


@PROPERTY
@given(
    records=st.lists(
        st.fixed_dictionaries(
            {"a": cells(), "b": cells().filter(is_not_a_refused_integer), "c": cells()},
            optional={"zzz": st.integers(0, 3), "id": st.integers(0, 3)},
        ),
        min_size=2,
        max_size=6,
    ),
    extra=st.sampled_from(["ignore", "reject"]),
)
def test_a_records_verdict_does_not_depend_on_the_other_records(
    records: list[dict[str, Any]], extra: str
) -> None:
    rows_checker = checker(policy=InputPolicy(extra_columns=extra))  # type: ignore[arg-type]
    whole = rows_checker.check_records(records, allowed=["id"])
    for row, record in enumerate(records):
        alone = rows_checker.check_records([record], allowed=["id"])
        assert bool(alone.rejected[0]) == bool(whole.rejected[row])
        assert alone.reasons.get(0) == whole.reasons.get(row)


def test_the_first_problem_in_signature_order_is_the_reason() -> None:
    # Columns given in the reverse order: the signature's order decides, not theirs.
    columns = {
        "c": ["bogus", "bogus", "bogus", "x"],
        "b": [2, 2, True, "abc"],
        "a": ["abc", 1.0, 1.0, None],
    }
    checked = checker().check_columns(columns, 4)
    assert checked.rejections() == [
        (0, "feature 'a' is not a number: 'abc'"),
        (1, "feature 'b' is not a boolean: '2'"),
        (2, "feature 'c' has an unknown category: 'bogus' (known: x, y, 3, 2.5, True)"),
        (3, "feature 'a' is missing, and this model cannot fill it in"),
    ]
    reordered = Signature(inputs=tuple(reversed(MIXED.inputs)))
    unknown = "feature 'c' has an unknown category: 'bogus' (known: x, y, 3, 2.5, True)"
    assert checker(reordered).check_columns(columns, 4).rejections() == [
        (0, unknown),
        (1, unknown),
        (2, unknown),
        (3, "feature 'b' is not a boolean: 'abc'"),
    ]


@pytest.mark.parametrize("door", ["columns", "records"])
def test_extra_columns_come_first_when_refused(door: str) -> None:
    rows = [{"a": "abc", "b": 2, "c": "bogus", "zzz": 1}, {**GOOD_ROW, "zzz": 2}]
    reason = EXTRA_REASON.format("'zzz'")
    refuse = checker(policy=InputPolicy(extra_columns="reject"))
    ignore = checker(policy=InputPolicy(extra_columns="ignore"))
    if door == "columns":
        columns = {n: [r[n] for r in rows] for n in ("a", "b", "c", "zzz")}
        refused = refuse.check_columns(columns, 2, extra=list(columns))
        ignored = ignore.check_columns(columns, 2, extra=list(columns))
    else:
        refused = refuse.check_records(rows)
        ignored = ignore.check_records(rows)
    assert refused.rejections() == [(0, reason), (1, reason)]
    assert ignored.rejections() == [(0, "feature 'a' is not a number: 'abc'")]


def test_allowed_columns_are_not_extra() -> None:
    refuse = checker(policy=InputPolicy(extra_columns="reject"))
    columns = {n: [v] for n, v in GOOD_ROW.items()} | {"id": [7], "note": ["kept"]}
    checked = refuse.check_columns(columns, 1, extra=list(columns), allowed=["id", "note"])
    assert checked.all_accepted
    checked = refuse.check_records([{**GOOD_ROW, "id": 7}], allowed=["id"])
    assert checked.all_accepted
    checked = refuse.check_columns(columns, 1, extra=list(columns), allowed=["id"])
    assert checked.reasons == {0: EXTRA_REASON.format("'note'")}


def test_many_extra_columns_are_named_up_to_five() -> None:
    refuse = checker(policy=InputPolicy(extra_columns="reject"))
    extra = [f"e{i}" for i in range(7)]
    checked = refuse.check_columns({n: [v] for n, v in GOOD_ROW.items()}, 1, extra=extra)
    names = "'e0', 'e1', 'e2', 'e3', 'e4' and 2 more"
    assert checked.reasons == {0: EXTRA_REASON.format(names)}


def test_extra_keys_are_judged_per_record() -> None:
    refuse = checker(policy=InputPolicy(extra_columns="reject"))
    records = [GOOD_ROW, {**GOOD_ROW, "zzz": 1, "yyy": 2}, {**GOOD_ROW, "id": 3}, GOOD_ROW]
    checked = refuse.check_records(records, allowed=["id"])
    assert checked.rejections() == [(1, EXTRA_REASON.format("'zzz', 'yyy'"))]
    assert checked.accepted_positions().tolist() == [0, 2, 3]


@pytest.mark.parametrize("signature", [MIXED, NUMERIC], ids=["mixed", "all-numeric"])
def test_a_table_without_a_feature_column_is_refused_whole(signature: Signature) -> None:
    # A wrong schema, not rows with gaps: even a model that fills every feature refuses it.
    fills = checker(signature, ModelLimits(fills_missing=frozenset({"a", "b", "c"})))
    absent = "'b', 'c'" if signature is MIXED else "'b'"
    with pytest.raises(InvalidInput, match=f"^missing feature column\\(s\\): {absent}$"):
        fills.check_columns({"a": [1.0, 2.0]}, 2)


def test_many_absent_feature_columns_are_named_up_to_five() -> None:
    wide = Signature(inputs=tuple(Feature(f"f{i}", "float64") for i in range(8)))
    with pytest.raises(InvalidInput, match=r"'f1', 'f2', 'f3', 'f4', 'f5' and 2 more$"):
        checker(wide).check_columns({"f0": [1.0]}, 1)


def test_a_record_without_a_feature_key_is_missing_it() -> None:
    records = [{"a": 1.0, "b": True}, GOOD_ROW, {"a": 1.0, "b": True, "c": None}]
    refused = checker().check_records(records)
    reason = "feature 'c' is missing, and this model cannot fill it in"
    assert refused.rejections() == [(0, reason), (2, reason)]
    filled = checker(limits=ModelLimits(fills_missing=frozenset({"c"}))).check_records(records)
    assert filled.all_accepted
    assert model_values(filled) == [[1.0, 1.0, None], [1.5, 1.0, "x"], [1.0, 1.0, None]]


def test_accepted_unknown_categories_are_flagged_per_feature() -> None:
    accept = checker(
        limits=ModelLimits(fills_missing=frozenset({"c"})),
        policy=InputPolicy(unknown_categories="accept"),
    )
    columns = {
        "a": [1.0, 1.0, "abc", 1.0, 1.0],
        "b": [True] * 5,
        "c": ["x", "bogus", "bogus", 99, None],
    }
    checked = accept.check_columns(columns, 5)
    assert checked.rejections() == [(2, "feature 'a' is not a number: 'abc'")]
    # Only accepted rows are flagged: a rejected row is not scored, so it is not counted.
    assert unknown_masks(checked) == {"c": [False, True, False, True, False]}
    assert model_values(checked) == [
        [1.0, 1.0, "x"],
        [1.0, 1.0, "bogus"],
        [1.0, 1.0, "99"],
        [1.0, 1.0, None],
    ]
    known = accept.check_columns({"a": [1.0], "b": [True], "c": ["y"]}, 1)
    assert known.unknown_categories == {}
    refused = checker().check_columns(columns, 5)
    assert refused.unknown_categories == {}
    assert refused.rejected.tolist() == [False, True, True, True, True]


@pytest.mark.parametrize(
    ("count", "is_closed"),
    [(0, False), (1, True), (MAX_CATEGORIES - 1, True), (MAX_CATEGORIES, False)],
)
def test_only_a_fully_recorded_category_list_makes_unknown_values(
    count: int, is_closed: bool
) -> None:
    names = tuple(f"k{i}" for i in range(count))
    feature = Feature("c", "string", "categorical", names)
    assert feature.has_closed_categories is is_closed
    rows_checker = RowChecker(
        Signature(inputs=(feature,)), ModelLimits(), InputPolicy(unknown_categories="reject")
    )
    checked = rows_checker.check_columns({"c": ["never seen", *names[:1]]}, 1 + min(count, 1))
    assert bool(checked.rejected[0]) is is_closed
    assert checked.rejected[1:].tolist() == [False] * min(count, 1)


def test_columns_of_the_wrong_length_are_refused_whole() -> None:
    with pytest.raises(InvalidInput, match=r"feature 'b' has 2 values for 3 rows"):
        checker().check_columns({"a": [1, 2, 3], "b": [True, False], "c": ["x"] * 3}, 3)
    with pytest.raises(InvalidInput, match=r"feature 'c' has 4 values for 3 rows"):
        checker().check_columns({"a": [1, 2, 3], "b": [1, 0, 1], "c": ["x"] * 4}, 3)


def test_a_clean_matrix_is_passed_through_as_it_is() -> None:
    matrix = np.array([[1.5, 0.0], [-2.0, 1.0]])
    checked = checker(NUMERIC, ModelLimits(float32=True)).check_matrix(matrix)
    assert checked.all_accepted
    assert checked.accepted_batch() is matrix


def test_a_matrix_row_is_refused_with_its_reason() -> None:
    matrix = np.array(
        [[1.5, 0.0], [1e39, 1.0], [math.inf, 0.0], [math.nan, 1.0], [1.0, 0.5], [2.0, math.nan]]
    )
    rows_checker = checker(NUMERIC, ModelLimits(fills_missing=frozenset({"b"}), float32=True))
    result = rows_checker.check_matrix(matrix)
    assert result.rejections() == [
        (
            1,
            "feature 'a' is out of range: '1e+39' "
            "(this model computes in float32, which holds at most ±3.4e+38)",
        ),
        (2, "feature 'a' is not finite: 'inf'"),
        (3, "feature 'a' is missing, and this model cannot fill it in"),
        (4, "feature 'b' is not a boolean: '0.5'"),
    ]
    assert result.accepted_positions().tolist() == [0, 5]
    accepted = result.accepted_batch()
    assert isinstance(accepted, np.ndarray)
    assert accepted.tolist()[0] == [1.5, 0.0]
    assert accepted[1, 0] == 2.0
    assert math.isnan(accepted[1, 1])


def test_checked_rows_give_the_accepted_rows_in_order() -> None:
    columns = {"a": [1.0, "abc", 3.0], "b": [True, True, False], "c": ["x", "y", "3"]}
    checked = checker().check_columns(columns, 3)
    assert checked.rows == 3
    assert not checked.all_accepted
    assert checked.accepted_positions().tolist() == [0, 2]
    accepted = checked.accepted_batch()
    assert isinstance(accepted, pd.DataFrame)
    assert accepted.index.tolist() == [0, 1]
    assert accepted.to_numpy().tolist() == [[1.0, 1.0, "x"], [3.0, 0.0, "3"]]
    assert list(accepted.columns) == ["a", "b", "c"]


def test_policy_from_settings_rules() -> None:
    rules = {"unknown_categories": "accept", "extra_columns": "reject", "missing_values": "reject"}
    assert InputPolicy.from_rules(rules) == InputPolicy("accept", "reject", "reject")
    assert InputPolicy.from_rules({}) == InputPolicy()
