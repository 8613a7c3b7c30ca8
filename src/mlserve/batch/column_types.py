"""Types for carried CSV columns, inferred per chunk from their text.

A CSV reader sees only text, so an integer id would reach OUTPUT as strings and a join back on
it would find nothing. Carried columns (the id and passthrough columns that OUTPUT copies) get,
chunk by chunk, the narrowest type that keeps what every cell of the chunk says:

- int64 when every cell is an integer written canonically (``0``, ``-12``; not ``007``, ``+5``
  or ``-0``) within int64, so the number written out is the cell's text again;
- float64 when every cell is a plain decimal or scientific number (``1.5``, ``-2e-3``; not
  ``007``, ``+5``, ``.5``, ``inf`` or ``nan``) of at most FLOAT_DIGITS significant digits, which
  float64 holds exactly, and finite;
- text otherwise (unchanged).

Empty cells (nulls) do not count; a chunk of only empty cells gets int64, the narrowest type, so
it never widens the other chunks' column. Chunks may disagree; OUTPUT's assembly gives the
column one type (``assembly.unified_schema``: int64 with float64 is float64, anything with text
is text, and an int64 cell written as text is its input text because only canonical integers
were typed).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

FLOAT_DIGITS = 15
"""Most significant digits that every float64 holds exactly (C's DBL_DIG); more stay text."""

_INTEGER = r"^(0|-?[1-9][0-9]*)$"
_DECIMAL = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$"
_EXPONENT = r"[eE].*$"
_LEADING = r"^-?[0.]*"  # sign, leading zeros and the point among them are not significant


def with_inferred_types(table: pa.Table, names: Sequence[str]) -> pa.Table:
    """``table`` with each text column of ``names`` cast to its inferred type."""
    for name in names:
        index = table.schema.get_field_index(name)
        if index >= 0 and pa.types.is_string(table.schema.field(index).type):
            table = table.set_column(index, name, inferred(table.column(index)))
    return table


def inferred(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A text ``column`` as int64 or float64 when every cell fits (see the module), else itself."""
    if column.null_count == len(column):
        return pc.cast(column, pa.int64())
    if _every(pc.match_substring_regex(column, _INTEGER)):
        try:
            return pc.cast(column, pa.int64())
        except pa.ArrowInvalid:  # beyond int64, so beyond float64's exact digits too
            return column
    if not _every(pc.match_substring_regex(column, _DECIMAL)):
        return column
    mantissa = pc.replace_substring_regex(column, _EXPONENT, "")
    significant = pc.replace_substring_regex(mantissa, _LEADING, "")  # digits and maybe a point
    digits = pc.subtract(pc.utf8_length(significant), pc.count_substring(significant, "."))
    if pc.max(digits).as_py() > FLOAT_DIGITS:
        return column
    floats = pc.cast(column, pa.float64())
    return floats if _every(pc.is_finite(floats)) else column


def _every(mask: pa.ChunkedArray) -> bool:
    """True when every non-null entry of ``mask`` is true (and one is not null)."""
    return bool(pc.all(mask).as_py())
