"""What one cell means for one feature: a single grammar for every door.

A cell is missing, a boolean, a number, text, or something else (a list, an object). Text is
read the same way whether it came from a CSV file, a CSV body, a JSON string or an OIP BYTES
tensor, and the rules are chosen so that writing a value as text (as pandas' ``to_csv`` does:
``True``, ``3``, ``2.5``, ``1e+308``, an empty field for a missing value) never changes its
verdict or the value the model sees:

- **missing**: null/None, a float NaN, or text that is one of pandas' default missing-value
  tokens (``""``, ``NA``, ``NaN``, ``null``, ``None``, …): what ``mlserve train`` read as
  missing when it loaded the training file.
- **numeric** features take numbers, text that spells a decimal number (``" 2.5 "``, ``1e3``,
  ``inf``), and booleans as 1.0 and 0.0 (a BOOL tensor, JSON ``true``, or its text ``True``),
  as numpy reads them; other words (``yes``) are not numbers.
- **boolean** features take booleans, the numbers 0 and 1, and the words true/false, t/f,
  yes/no (any case), as 1.0 and 0.0.
- **categorical** features take text as it is, and numbers and booleans as the text Python
  writes for them (``3`` → ``"3"``, ``2.5`` → ``"2.5"``, ``True`` → ``"True"``), because
  training stored categories as that text.

Numbers that are not finite, or beyond what the model computes in, are judged in
``checker.py``; this module only reads cells.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

NULL_TOKENS: tuple[str, ...] = (
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
)
"""Text that means a missing value: pandas' default ``na_values`` (``read_csv``), which is how
``mlserve train`` read the training data, so these never became categories there either."""

TRUE_WORDS = ("t", "yes")
FALSE_WORDS = ("f", "no")
"""Boolean words besides true and false, which every kind of feature reads as a boolean."""

_NUMBER = r"^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))$"
"""A decimal number as text (after trimming white space): what Arrow's float parser takes,
minus its extras, so the grammar is ours and the same for every door."""

_NULLS = pa.array(NULL_TOKENS, type=pa.string())
_TRUE = pa.array(TRUE_WORDS, type=pa.string())
_FALSE = pa.array(FALSE_WORDS, type=pa.string())
_TRUE_FALSE = pa.array(["true", "false"], type=pa.string())
_NUMBER_TYPES = (int, float, np.integer, np.floating)
_DIGIT_RUNS = bytes(
    ord("0") if byte in b"0123456789" else ord(".") if byte == ord(".") else ord(" ")
    for byte in range(256)
)
"""Bytes as _may_hold_long_integer sees them: digits as "0", the decimal point, else a space."""
_LONG_DIGITS = b"0" * 19


@dataclass(slots=True)
class Cells:
    """One feature's cells, sorted by what they are. Masks are boolean arrays, one per row."""

    numbers: np.ndarray
    """float64: the value of every number (typed or spelled as text), 1.0/0.0 for booleans
    and words, NaN elsewhere."""
    missing: np.ndarray
    booleans: np.ndarray
    """Typed booleans, and their text: true/false in any case."""
    words: np.ndarray
    """The other boolean words: yes/no/t/f in any case."""
    invalid: np.ndarray
    """Text that is no number, word or missing token."""
    nested: np.ndarray
    """Lists and objects: never one value."""
    source: Any
    """What the cells came from, to quote a cell in a reason."""

    def quoted(self, row: int) -> str:
        """The cell as a reason quotes it: ``'abc'``, ``'True'``, ``'2.5'``."""
        return repr(display(cell_at(self.source, row)))


def loads_json(text: bytes | memoryview) -> Any:
    """Parse JSON text; raises ValueError (orjson's message) when it is not JSON.

    Python's ``json.dumps`` writes ``NaN``, ``Infinity`` and ``-Infinity``, and MLflow accepts
    them; orjson does not (nor numbers past float64, such as 1e400). Only text orjson refuses
    is read again with the standard library, which takes them all: NaN is then a missing value
    and an infinity a non-finite one, judged like any other.

    orjson also reads an integer past 64 bits (``18446744073709551616``) as a float, which
    loses its digits: the category ``2**64`` would differ from the same text in a CSV file. Text
    that may hold one (a run of 19 digits or more, not a fraction's) is read again with the
    standard library too, which reads every integer exactly.
    """
    raw = text if isinstance(text, bytes) else bytes(text)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise ValueError(str(exc)) from None
    if _may_hold_long_integer(raw):
        with contextlib.suppress(ValueError, RecursionError):  # orjson's reading stands
            return json.loads(raw)
    return value


def _may_hold_long_integer(raw: bytes) -> bool:
    """True when ``raw`` has a run of 19 or more digits that does not follow a decimal point:
    the only way to write an integer orjson reads as a float (its integers reach 2**64 - 1 and
    down to -2**63). Digits in strings count too; reading those again is only slower."""
    # One pass in C, about a tenth of orjson's own time: an integer's digits follow a space
    # (a sign, a bracket, a comma, white space) or open the text.
    runs = raw.translate(_DIGIT_RUNS)
    return runs.startswith(_LONG_DIGITS) or b" " + _LONG_DIGITS in runs


def read_cells(values: Any) -> Cells:
    """Sort a column's cells: a numpy array, an Arrow array or a Python sequence."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return _arrow_cells(values)
    if isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype.kind in "fiub":
        return _typed_cells(values)
    return _python_cells(values if isinstance(values, list) else list(values))


def category_texts(values: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A categorical column as (text or None per row, missing mask, nested mask)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        kind = values.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            missing = _mask(pc.or_kleene(values.is_null(), pc.is_in(values, value_set=_NULLS)))
            texts = np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)
            texts[missing] = None
            return texts, missing, np.zeros(len(values), dtype=bool)
        values = values.to_pylist()
    elif isinstance(values, np.ndarray):
        values = values.tolist()
    count = len(values)
    texts = np.empty(count, dtype=object)
    missing = np.zeros(count, dtype=bool)
    nested = np.zeros(count, dtype=bool)
    nulls = frozenset(NULL_TOKENS)
    for index, value in enumerate(values):
        text = category_text(value)
        if text is None or text in nulls:
            missing[index] = True
        elif isinstance(value, list | dict | tuple):
            nested[index] = True
        else:
            texts[index] = text
    return texts, missing, nested


def category_text(value: Any) -> str | None:
    """The category a single value names (None when it is missing)."""
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return None
    return display(value)


def display(value: Any) -> str:
    """A value's text as its text rendering writes it (``2``, ``2.0``, ``1e+308``, ``True``;
    text as it is): what a category is named by, and how a reason quotes a cell, so a number
    and its text are named alike."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return repr(float(value))
    return repr(value)


def cell_at(source: Any, row: int) -> Any:
    """One cell of a column as a Python value."""
    if isinstance(source, pa.ChunkedArray | pa.Array):
        return source[row].as_py()
    value = source[row]
    return value.item() if isinstance(value, np.generic) else value


def _typed_cells(array: np.ndarray) -> Cells:
    count = len(array)
    no = np.zeros(count, dtype=bool)
    if array.dtype.kind == "b":
        return Cells(array.astype(np.float64), no, array.astype(bool), no, no, no, array)
    numbers = array.astype(np.float64, copy=False)
    return Cells(numbers, np.isnan(numbers), no, no, no, no, array)


def _arrow_cells(array: pa.Array) -> Cells:
    kind, count = array.type, len(array)
    no = np.zeros(count, dtype=bool)
    nulls = _mask(array.is_null())
    if pa.types.is_null(kind):
        return Cells(np.full(count, np.nan), np.ones(count, dtype=bool), no, no, no, no, array)
    if pa.types.is_boolean(kind):
        numbers = _floats(pc.cast(array, pa.float64()))
        return Cells(numbers, nulls, ~nulls, no, no, no, array)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        numbers = _floats(pc.cast(array, pa.float64(), safe=False))
        return Cells(numbers, np.isnan(numbers), no, no, no, no, array)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return _python_cells(array.to_pylist())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _text_cells(array)
    return Cells(np.full(count, np.nan), nulls, no, no, no, ~nulls, array)


def _python_cells(values: Sequence[Any]) -> Cells:
    """Cells of Python values: one pass to sort them, then numbers and text in bulk."""
    count = len(values)
    kinds = {type(v) for v in values} - {type(None)}
    if all(issubclass(k, _NUMBER_TYPES) and not issubclass(k, bool | np.bool_) for k in kinds):
        # Numbers and nulls only (the usual JSON column): numpy reads None as NaN. Reasons quote
        # the cells as they came (JSON 2 is '2', not the float it becomes).
        with contextlib.suppress(OverflowError):  # an int past float64: one by one below
            cells = _typed_cells(np.asarray(values, dtype=np.float64))
            cells.source = values
            return cells
    numbers = np.full(count, np.nan)
    missing = np.zeros(count, dtype=bool)
    booleans = np.zeros(count, dtype=bool)
    nested = np.zeros(count, dtype=bool)
    text_rows: list[int] = []
    texts: list[str] = []
    for index, value in enumerate(values):
        if value is None:
            missing[index] = True
        elif isinstance(value, bool | np.bool_):
            booleans[index] = True
            numbers[index] = 1.0 if value else 0.0
        elif isinstance(value, _NUMBER_TYPES):
            number = as_float64(value)
            numbers[index] = number
            missing[index] = math.isnan(number)
        elif isinstance(value, str | bytes):
            text_rows.append(index)
            texts.append(value if isinstance(value, str) else value.decode("utf-8", "replace"))
        else:
            nested[index] = True
    invalid = np.zeros(count, dtype=bool)
    words = np.zeros(count, dtype=bool)
    if text_rows:
        read = _text_cells(pa.array(texts, type=pa.string()))
        at = np.asarray(text_rows, dtype=np.int64)
        numbers[at] = read.numbers
        missing[at] = read.missing
        booleans[at] = read.booleans
        words[at] = read.words
        invalid[at] = read.invalid
    return Cells(numbers, missing, booleans, words, invalid, nested, values)


def as_float64(value: Any) -> float:
    """A JSON number (or null, as NaN) as float64; an integer too large for it is infinite, as
    its text would be. Raises TypeError or ValueError for anything else."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _text_cells(text: pa.Array) -> Cells:
    """Text cells: missing tokens, numbers, boolean words, or invalid."""
    try:
        # The usual CSV column: plain numbers and empty fields, read by one cast. Arrow's parser
        # takes a little more than our grammar (``nan(123)``), so a NaN that is not an empty
        # field goes the long way, where the grammar decides.
        numbers = _floats(pc.cast(text, pa.float64()))
    except pa.ArrowInvalid:
        return _judged_text_cells(text)
    nulls = _mask(text.is_null())
    if (np.isnan(numbers) & ~nulls).any():
        return _judged_text_cells(text)
    no = np.zeros(len(text), dtype=bool)
    return Cells(numbers, nulls, no, no, no, no, text)


def _judged_text_cells(text: pa.Array) -> Cells:
    """Text cells read cell by cell against the grammar (vectorised)."""
    count = len(text)
    missing = _mask(pc.or_kleene(text.is_null(), pc.is_in(text, value_set=_NULLS)))
    trimmed = pc.utf8_trim_whitespace(text)
    is_number = _mask(pc.match_substring_regex(trimmed, _NUMBER)) & ~missing
    numbers = np.full(count, np.nan)
    if is_number.any():
        spelled = pc.if_else(pa.array(is_number), trimmed, pa.scalar(None, pa.string()))
        numbers = _floats(pc.cast(spelled, pa.float64()))
        missing |= is_number & np.isnan(numbers)  # "+nan", "NAN": no token, but not a number
    lowered = pc.utf8_lower(trimmed)
    true_false = _mask(pc.is_in(lowered, value_set=_TRUE_FALSE)) & ~missing
    numbers[true_false] = np.where(_mask(pc.equal(lowered, "true"))[true_false], 1.0, 0.0)
    is_true = _mask(pc.is_in(lowered, value_set=_TRUE))
    words = (is_true | _mask(pc.is_in(lowered, value_set=_FALSE))) & ~missing
    numbers[words] = np.where(is_true[words], 1.0, 0.0)
    invalid = ~missing & ~is_number & ~true_false & ~words
    no = np.zeros(count, dtype=bool)
    return Cells(numbers, missing, true_false, words, invalid, no, text)


def _mask(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow result as a numpy mask (null counts as False)."""
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _floats(array: pa.Array) -> np.ndarray:
    """A float64 Arrow array as a writable numpy array, nulls as NaN."""
    return np.array(array.to_numpy(zero_copy_only=False), dtype=np.float64)
