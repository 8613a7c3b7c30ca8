"""Cells as clients send them, a small mixed signature, and the doors rows come in by."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import strategies as st

from mlserve.inputs import (
    NULL_TOKENS,
    CheckedRows,
    InputPolicy,
    ModelLimits,
    RowChecker,
    read_csv_text,
)
from mlserve.types import Feature, Signature

CATEGORIES = ("x", "y", "3", "2.5", "True")
"""Closed categories of ``c``: text, and what Python writes for 3, 2.5 and True."""

MIXED = Signature(
    inputs=(
        Feature("a", "float64"),
        Feature("b", "bool", kind="boolean"),
        Feature("c", "string", kind="categorical", categories=CATEGORIES),
    )
)
"""One numeric, one boolean and one categorical feature with closed categories."""

NUMERIC = Signature(inputs=(Feature("a", "float64"), Feature("b", "bool", kind="boolean")))
"""An all-numeric signature (a float64 matrix can carry its rows)."""

GOOD_ROW: dict[str, Any] = {"a": 1.5, "b": True, "c": "x"}
"""A row every checker below accepts."""

NUMBER_TEXTS = (" 2.5 ", "1e3", "+3", ".5", "inf", "-Infinity", "1.", "-0", "1E-3", "3.0")
NON_NUMBER_TEXTS = ("abc", "1_000", "0x10", "1e", "e5", " ", "1,5", "--1", "½")
BOOLEAN_WORDS = ("true", "false", "t", "f", "yes", "no")
HUGE_INTS = (10**400, -(10**400), 2**64, 10**17, -(2**63) - 1)


def any_case(word: str) -> st.SearchStrategy[str]:
    """``word`` with each letter in either case."""
    letters = [st.sampled_from([c.lower(), c.upper()]) for c in word]
    return st.tuples(*letters).map("".join)


def cells(*, huge_ints: bool = True, nested: bool = False) -> st.SearchStrategy[Any]:
    """One cell of any kind a door can carry: missing, numbers, booleans, text, words.

    ``huge_ints`` adds integers float64 cannot hold exactly (or at all); ``nested`` adds
    lists and objects, which only JSON carries.
    """
    kinds = [
        st.none(),
        st.just(math.nan),
        st.sampled_from(NULL_TOKENS),
        st.integers(-(10**15), 10**15),
        st.sampled_from([0, 1, -1, 2, 3]),
        st.floats(allow_nan=False),
        st.sampled_from([1e308, -1e39, 3e38, 2.5, 0.5, -0.0, 1.0, 0.0]),
        st.integers(-(10**15), 10**15).map(np.int64),
        st.floats(allow_nan=False).map(np.float64),
        st.booleans(),
        st.booleans().map(np.bool_),
        st.sampled_from(NUMBER_TEXTS),
        st.sampled_from(NON_NUMBER_TEXTS),
        st.sampled_from(BOOLEAN_WORDS).flatmap(any_case),
        st.sampled_from([*CATEGORIES, "bogus", "X", " x"]),
        st.text(alphabet="ab1.e+-, \"'", max_size=5),
    ]
    if huge_ints:
        kinds.append(st.sampled_from(HUGE_INTS))
    if nested:
        kinds.append(st.sampled_from([[1], [], {"a": 1}, {}]))
    return st.one_of(kinds)


GOOD_CELLS: dict[str, st.SearchStrategy[Any]] = {
    "a": st.one_of(
        st.floats(min_value=-1e30, max_value=1e30),
        st.integers(-(10**15), 10**15),
        st.sampled_from(["2.5", " 7 ", "-1e3", ".5", True, "false"]),
    ),
    "b": st.sampled_from([True, False, 0, 1, 1.0, np.bool_(False), "yes", "F", "1", "TRUE"]),
    "c": st.sampled_from([*CATEGORIES, 3, 2.5, True, np.int64(3), np.float64(2.5)]),
}
"""Cells each feature of ``MIXED`` takes, so that generated rows are often accepted."""

LIMITS = st.sampled_from(
    [
        ModelLimits(),
        ModelLimits(float32=True),
        ModelLimits(fills_missing=frozenset({"a", "b", "c"})),
        ModelLimits(fills_missing=frozenset({"b"}), float32=True),
    ]
)
POLICIES = st.sampled_from(
    [
        InputPolicy(),
        InputPolicy(unknown_categories="accept"),
        InputPolicy(unknown_categories="accept", missing_values="reject"),
    ]
)


def object_array(values: list[Any]) -> np.ndarray:
    """``values`` as a 1-D numpy object array (lists stay cells, not a second dimension)."""
    array = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        array[index] = value
    return array


def csv_columns(columns: dict[str, list[Any]]) -> dict[str, pa.ChunkedArray]:
    """Columns written by pandas ``to_csv`` (True -> "True", 2.5 -> "2.5", None and NaN ->
    an empty field) and read back by ``read_csv_text``: the text door."""
    frame = pd.DataFrame({n: pd.Series(v, dtype=object) for n, v in columns.items()})
    table = read_csv_text(frame.to_csv(index=False).encode())
    return {name: table.column(name) for name in table.column_names}


def verdicts(checked: CheckedRows) -> tuple[list[bool], list[tuple[int, str]]]:
    """What a door answered: the rejected mask and every (row, reason)."""
    return checked.rejected.tolist(), checked.rejections()


def model_values(checked: CheckedRows) -> list[list[Any]]:
    """The accepted rows' values as the model sees them, NaN as None so rows compare."""
    batch = checked.accepted_batch()
    rows = batch.to_numpy().tolist() if isinstance(batch, pd.DataFrame) else batch.tolist()
    return [[None if _is_nan(v) else v for v in row] for row in rows]


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def checker(
    signature: Signature = MIXED,
    limits: ModelLimits | None = None,
    policy: InputPolicy | None = None,
) -> RowChecker:
    """A checker of ``signature`` (default: fills nothing, float64, default policy)."""
    return RowChecker(signature, limits or ModelLimits(), policy or InputPolicy())
