"""The cell grammar (``values.py``), seen through the checker: what each kind of cell means for a
numeric, a boolean and a categorical feature, and the exact reason when it is refused."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from input_cells import BOOLEAN_WORDS, GOOD_ROW, any_case, checker

from mlserve.inputs import NULL_TOKENS, InputPolicy, ModelLimits, loads_json
from mlserve.types import Feature, Signature

FLOAT32_NOTE = "(this model computes in float32, which holds at most ±3.4e+38)"
KNOWN = "(known: x, y, 3, 2.5, True)"
EVERYTHING = frozenset({"a", "b", "c"})
UNKNOWN = "feature 'c' has an unknown category: {!r} " + KNOWN


@dataclass(frozen=True)
class Takes:
    """The row is accepted and the model sees ``value`` for the feature."""

    value: Any


def judge(
    name: str, cell: Any, limits: ModelLimits | None = None, policy: InputPolicy | None = None
) -> Takes | str:
    """One row of the mixed signature, ``name`` holding ``cell`` and the others good: what the
    model sees, or why the row is refused."""
    columns = {n: [v] for n, v in GOOD_ROW.items()}
    columns[name] = [cell]
    checked = checker(limits=limits, policy=policy).check_columns(columns, 1)
    if checked.rejected[0]:
        return checked.reasons[0]
    value = checked.batch[name][0]
    return Takes(None if isinstance(value, float) and math.isnan(value) else value)


def assert_same(got: Takes | str, expected: Takes | str) -> None:
    """Compare verdicts; numbers must also have the same type the model sees (float64)."""
    assert got == expected
    if isinstance(expected, Takes) and isinstance(expected.value, float):
        assert isinstance(got, Takes)
        assert type(got.value) in (float, np.float64)


MISSING_CELLS = [None, math.nan, np.float64("nan"), np.float32("nan"), *NULL_TOKENS]


@pytest.mark.parametrize("name", ["a", "b", "c"])
@pytest.mark.parametrize("cell", MISSING_CELLS, ids=repr)
def test_missing_cells_are_refused_where_the_model_cannot_fill_them(name: str, cell: Any) -> None:
    assert judge(name, cell) == f"feature {name!r} is missing, and this model cannot fill it in"


@pytest.mark.parametrize("name", ["a", "b", "c"])
@pytest.mark.parametrize("cell", MISSING_CELLS, ids=repr)
def test_missing_cells_reach_the_model_as_nan_where_it_fills_them(name: str, cell: Any) -> None:
    assert judge(name, cell, ModelLimits(fills_missing=frozenset({name}))) == Takes(None)


@pytest.mark.parametrize("name", ["a", "b", "c"])
def test_missing_values_reject_refuses_them_even_where_the_model_fills_them(name: str) -> None:
    limits = ModelLimits(fills_missing=EVERYTHING)
    policy = InputPolicy(missing_values="reject")
    expected = f"feature {name!r} is missing, and missing values are refused for this model"
    assert judge(name, None, limits, policy) == expected
    assert judge(name, "NA", limits, policy) == expected


@pytest.mark.parametrize(
    ("token", "is_missing"),
    [(token, True) for token in NULL_TOKENS]
    + [(text, False) for text in ("na", "none", "Null", "NAN", "-", "?", "nil", "N.A.")],
)
def test_missing_tokens_are_what_pandas_read_as_missing_in_training(
    token: str, is_missing: bool
) -> None:
    # `mlserve train` reads its data with pandas' defaults: a token is missing here exactly
    # when it was missing there, so it never became a category.
    read = pd.read_csv(io.StringIO(f"v,w\n{token},1\n"), dtype=str)
    assert bool(read["v"].isna()[0]) is is_missing
    assert (judge("c", token) == "feature 'c' is missing, and this model cannot fill it in") is (
        is_missing
    )


NOT_A_NUMBER = "feature 'a' is not a number: {!r}"
NOT_FINITE = "feature 'a' is not finite: {!r}"
ONE_VALUE = "feature {!r} must be one value, not a list or object"

NUMERIC_TABLE: list[tuple[Any, Takes | str]] = [
    # numbers of every Python and numpy type
    (1, Takes(1.0)),
    (-7, Takes(-7.0)),
    (2.5, Takes(2.5)),
    (-0.0, Takes(-0.0)),
    (np.int64(3), Takes(3.0)),
    (np.uint8(200), Takes(200.0)),
    (np.float64(2.5), Takes(2.5)),
    (np.float32(2.5), Takes(2.5)),
    (2**64, Takes(float(2**64))),
    (1e308, Takes(1e308)),
    # numbers past float64 are infinite, as their text would be
    (10**400, NOT_FINITE.format("inf")),
    (-(10**400), NOT_FINITE.format("-inf")),
    (math.inf, NOT_FINITE.format("inf")),
    (-math.inf, NOT_FINITE.format("-inf")),
    (np.float32("-inf"), NOT_FINITE.format("-inf")),
    # booleans are 1 and 0, typed or spelled true/false (as numpy reads them); other words
    # are not numbers
    (True, Takes(1.0)),
    (False, Takes(0.0)),
    (np.bool_(True), Takes(1.0)),
    ("TRUE", Takes(1.0)),
    (" false ", Takes(0.0)),
    ("yes", NOT_A_NUMBER.format("yes")),
    ("No", NOT_A_NUMBER.format("No")),
    ("f", NOT_A_NUMBER.format("f")),
    ("T", NOT_A_NUMBER.format("T")),
    # text that spells a decimal number
    (" 2.5 ", Takes(2.5)),
    ("1e3", Takes(1000.0)),
    ("1E-3", Takes(0.001)),
    ("+3", Takes(3.0)),
    (".5", Takes(0.5)),
    ("1.", Takes(1.0)),
    ("-0", Takes(-0.0)),
    ("007", Takes(7.0)),
    ("\t4\n", Takes(4.0)),
    ("1" + "0" * 400, NOT_FINITE.format("inf")),
    ("1e400", NOT_FINITE.format("inf")),
    ("inf", NOT_FINITE.format("inf")),
    ("INF", NOT_FINITE.format("inf")),
    ("-Infinity", NOT_FINITE.format("-inf")),
    ("+infinity", NOT_FINITE.format("inf")),
    # text that does not
    ("abc", NOT_A_NUMBER.format("abc")),
    ("1_000", NOT_A_NUMBER.format("1_000")),
    ("0x10", NOT_A_NUMBER.format("0x10")),
    ("1,5", NOT_A_NUMBER.format("1,5")),
    ("1e", NOT_A_NUMBER.format("1e")),
    ("e5", NOT_A_NUMBER.format("e5")),
    ("--1", NOT_A_NUMBER.format("--1")),
    ("١", NOT_A_NUMBER.format("١")),  # an Arabic-Indic digit: Python's float() takes it
    ("  ", NOT_A_NUMBER.format("  ")),
    (b"abc", NOT_A_NUMBER.format("abc")),
    # never one value
    ([1], ONE_VALUE.format("a")),
    ([], ONE_VALUE.format("a")),
    ({"a": 1}, ONE_VALUE.format("a")),
]


@pytest.mark.parametrize(("cell", "expected"), NUMERIC_TABLE, ids=repr)
def test_numeric_feature_grammar(cell: Any, expected: Takes | str) -> None:
    assert_same(judge("a", cell), expected)


@pytest.mark.parametrize("name", ["a", "b"])
@pytest.mark.parametrize("cell", ["NAN", "nAn", "+nan", "-NAN", " nan ", "NaN "], ids=repr)
def test_text_spelling_nan_otherwise_is_missing_too(name: str, cell: str) -> None:
    # Never a NaN handed to a model that cannot fill the feature in.
    assert judge(name, cell) == f"feature {name!r} is missing, and this model cannot fill it in"
    assert judge(name, cell, ModelLimits(fills_missing=frozenset({name}))) == Takes(None)


def test_text_spelling_nan_otherwise_is_a_category_as_written() -> None:
    # pandas read it as text in training too: only its missing-value tokens are missing.
    assert judge("c", "NAN") == UNKNOWN.format("NAN")


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="0123456789.eE+-infatyINFATY _dxp", min_size=1, max_size=8))
def test_number_like_text_reads_the_same_alone_or_beside_other_text(text: str) -> None:
    # A column of number text alone is read in one cast; beside other text, cell by cell.
    alone = checker().check_columns({"a": [text], "b": [True], "c": ["x"]}, 1)
    beside = checker().check_columns({"a": [text, "abc"], "b": [True] * 2, "c": ["x"] * 2}, 2)
    assert alone.reasons.get(0) == beside.reasons.get(0)
    if not alone.rejected[0]:
        assert alone.batch["a"][0] == beside.batch["a"][0]


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        (1e308, "1e+308"),
        ("1e308", "1e+308"),
        (-1e39, "-1e+39"),
        (10**39, "1e+39"),
        ("3.5e38", "3.5e+38"),
        (np.float64(1e300), "1e+300"),
    ],
    ids=repr,
)
def test_a_float32_model_refuses_numbers_float32_cannot_hold(cell: Any, shown: str) -> None:
    expected = f"feature 'a' is out of range: {shown!r} {FLOAT32_NOTE}"
    assert judge("a", cell, ModelLimits(float32=True)) == expected
    assert judge("a", cell, ModelLimits(float32=False)) == Takes(float(cell))


@settings(max_examples=150, deadline=None)
@given(
    number=st.one_of(
        st.floats(min_value=3.40282e38, max_value=3.40283e38),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    negative=st.booleans(),
)
def test_the_float32_range_is_exactly_what_float32_holds(number: float, negative: bool) -> None:
    number = -number if negative else number
    with np.errstate(over="ignore"):
        holds = bool(np.isfinite(np.array([number]).astype(np.float32))[0])
    verdict = judge("a", number, ModelLimits(float32=True))
    assert (verdict == Takes(number)) is holds
    if not holds:
        assert isinstance(verdict, str)
        assert verdict.startswith("feature 'a' is out of range: ")


NOT_BOOLEAN = "feature 'b' is not a boolean: {!r}"

BOOLEAN_TABLE: list[tuple[Any, Takes | str]] = [
    (True, Takes(1.0)),
    (False, Takes(0.0)),
    (np.bool_(False), Takes(0.0)),
    (1, Takes(1.0)),
    (0, Takes(0.0)),
    (1.0, Takes(1.0)),
    (-0.0, Takes(0.0)),
    (np.int64(1), Takes(1.0)),
    (np.float32(0), Takes(0.0)),
    ("1", Takes(1.0)),
    ("0", Takes(0.0)),
    ("1.0", Takes(1.0)),
    (" 0 ", Takes(0.0)),
    (2.5, NOT_BOOLEAN.format("2.5")),
    (2.0, NOT_BOOLEAN.format("2.0")),
    (-1.0, NOT_BOOLEAN.format("-1.0")),
    (np.float64(3.0), NOT_BOOLEAN.format("3.0")),
    (1e17, NOT_BOOLEAN.format("1e+17")),
    (1e308, NOT_BOOLEAN.format("1e+308")),
    (math.inf, NOT_BOOLEAN.format("inf")),
    ("2", NOT_BOOLEAN.format("2")),
    (" 2.5 ", NOT_BOOLEAN.format(" 2.5 ")),
    ("1e3", NOT_BOOLEAN.format("1e3")),
    ("inf", NOT_BOOLEAN.format("inf")),
    ("-Infinity", NOT_BOOLEAN.format("-Infinity")),
    ("abc", NOT_BOOLEAN.format("abc")),
    ("0x10", NOT_BOOLEAN.format("0x10")),
    ("1_000", NOT_BOOLEAN.format("1_000")),
    ("y", NOT_BOOLEAN.format("y")),
    ("on", NOT_BOOLEAN.format("on")),
    ("yes!", NOT_BOOLEAN.format("yes!")),
    ([True], ONE_VALUE.format("b")),
    ({"b": 1}, ONE_VALUE.format("b")),
]


@pytest.mark.parametrize(("cell", "expected"), BOOLEAN_TABLE, ids=repr)
def test_boolean_feature_grammar(cell: Any, expected: Takes | str) -> None:
    assert_same(judge("b", cell), expected)


@pytest.mark.parametrize("cell", [2, -1, np.int64(3)], ids=repr)
def test_a_boolean_feature_quotes_a_refused_integer_as_written(cell: Any) -> None:
    assert judge("b", cell) == NOT_BOOLEAN.format(str(int(cell)))


@settings(max_examples=60, deadline=None)
@given(
    word=st.sampled_from(BOOLEAN_WORDS).flatmap(any_case),
    padding=st.sampled_from(["", " ", "\t"]),
)
def test_boolean_words_are_read_in_any_case(word: str, padding: str) -> None:
    expected = 1.0 if word.lower() in ("true", "t", "yes") else 0.0
    assert judge("b", f"{padding}{word}{padding}") == Takes(expected)


@settings(max_examples=60, deadline=None)
@given(word=st.sampled_from(BOOLEAN_WORDS).flatmap(any_case))
def test_a_numeric_feature_reads_true_and_false_in_any_case_and_no_other_word(word: str) -> None:
    expected: Takes | str = NOT_A_NUMBER.format(word)
    if word.lower() in ("true", "false"):
        expected = Takes(1.0 if word.lower() == "true" else 0.0)
    assert judge("a", word) == expected


@pytest.mark.parametrize("cell", [10**400, -(10**400)], ids=["10**400", "-10**400"])
def test_an_integer_past_float64_is_not_a_boolean(cell: int) -> None:
    assert judge("b", cell) == NOT_BOOLEAN.format(str(cell))


CATEGORICAL_TABLE: list[tuple[Any, Takes | str]] = [
    ("x", Takes("x")),
    ("y", Takes("y")),
    ("3", Takes("3")),
    (3, Takes("3")),
    (np.int64(3), Takes("3")),
    (2.5, Takes("2.5")),
    (np.float64(2.5), Takes("2.5")),
    (np.float32(2.5), Takes("2.5")),
    (True, Takes("True")),
    (np.bool_(True), Takes("True")),
    ("True", Takes("True")),
    (b"x", Takes("x")),
    # text is taken as it is: no trimming, no case folding, no number reading
    ("bogus", UNKNOWN.format("bogus")),
    (" x", UNKNOWN.format(" x")),
    ("X", UNKNOWN.format("X")),
    ("TRUE", UNKNOWN.format("TRUE")),
    ("3.0", UNKNOWN.format("3.0")),
    ("+3", UNKNOWN.format("+3")),
    ("inf", UNKNOWN.format("inf")),
    # numbers and booleans are the text Python writes for them
    (False, UNKNOWN.format("False")),
    (3.0, UNKNOWN.format("3.0")),
    (1e308, UNKNOWN.format("1e+308")),
    (math.inf, UNKNOWN.format("inf")),
    (10**400, UNKNOWN.format(str(10**400))),
    ([1], ONE_VALUE.format("c")),
    ({"c": "x"}, ONE_VALUE.format("c")),
]


@pytest.mark.parametrize(("cell", "expected"), CATEGORICAL_TABLE, ids=repr)
def test_categorical_feature_grammar(cell: Any, expected: Takes | str) -> None:
    assert_same(judge("c", cell), expected)


@pytest.mark.parametrize("cell", ["bogus", 99, 3.0, False, "X"], ids=repr)
def test_unknown_categories_accept_scores_the_text_as_written(cell: Any) -> None:
    policy = InputPolicy(unknown_categories="accept")
    assert judge("c", cell, policy=policy) == Takes(str(cell))


def test_a_long_category_list_is_shortened_in_the_reason() -> None:
    names = tuple(f"k{i}" for i in range(12))
    signature = Signature(inputs=(Feature("c", "string", "categorical", names),))
    checked = checker(signature).check_columns({"c": ["zz"]}, 1)
    expected = (
        "feature 'c' has an unknown category: 'zz' (known: k0, k1, k2, k3, k4, k5, k6, k7, …)"
    )
    assert checked.reasons == {0: expected}


@pytest.mark.parametrize(
    ("body", "a", "reason"),
    [
        (
            b'{"a": NaN, "b": true, "c": "x"}',
            None,
            "feature 'a' is missing, and this model cannot fill it in",
        ),
        (b'{"a": Infinity, "b": true, "c": "x"}', math.inf, NOT_FINITE.format("inf")),
        (b'{"a": -Infinity, "b": true, "c": "x"}', -math.inf, NOT_FINITE.format("-inf")),
        (b'{"a": 1e400, "b": true, "c": "x"}', math.inf, NOT_FINITE.format("inf")),
    ],
)
def test_json_nan_and_infinity_are_values_judged_like_any_other(
    body: bytes, a: float | None, reason: str
) -> None:
    record = loads_json(body)
    assert record["a"] == a or (a is None and math.isnan(record["a"]))
    checked = checker().check_records([record])
    assert checked.reasons == {0: reason}


def test_loads_json_reads_what_python_json_dumps_writes() -> None:
    rows = [{"a": math.nan, "b": math.inf, "c": -math.inf, "d": [1, "x", None]}]
    read = loads_json(json.dumps(rows).encode())
    assert math.isnan(read[0]["a"])
    assert read[0]["b"] == math.inf
    assert read[0]["c"] == -math.inf
    assert read[0]["d"] == [1, "x", None]
    assert loads_json(memoryview(b'{"k": [1, 2.5]}')) == {"k": [1, 2.5]}


@pytest.mark.parametrize(
    "value", [2**64, -(2**63) - 1, 10**30, -(10**40), 2**64 - 1, -(2**63), 10**400]
)
def test_loads_json_reads_integers_of_any_size_exactly(value: int) -> None:
    body = json.dumps({"a": value, "b": [1.5, value, "x"]})
    assert loads_json(body.encode()) == {"a": value, "b": [1.5, value, "x"]}
    assert loads_json(memoryview(str(value).encode())) == value


@pytest.mark.parametrize(
    "body",
    [b"[12345678901234567890.5]", b"[0.12345678901234567890123]", b'["12345678901234567890"]'],
)
def test_loads_json_reads_long_digit_runs_that_are_no_integer_as_written(body: bytes) -> None:
    assert loads_json(body) == json.loads(body)


@pytest.mark.parametrize("body", [b'{"a": }', b"[1, 2", b"", b"NaNa", b'{"a": nan}'])
def test_loads_json_refuses_text_that_is_not_json(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):
        loads_json(body)
