"""CSV read the one way every door reads it: every cell as text, judged by ``values.py``.

Arrow would guess each column's type from its first block and turn its own list of null tokens
into nulls; neither may decide a row's verdict, so cells stay text (only an empty field is
null) and the input checker reads them as it reads JSON strings, missing-value tokens included.
"""

from __future__ import annotations

import io
from collections import Counter

import pyarrow as pa
import pyarrow.csv as pacsv

from mlserve.errors import InvalidInput


def text_convert_options(columns: list[str]) -> pacsv.ConvertOptions:
    """Arrow CSV options that read ``columns`` as text, an empty field as null."""
    return pacsv.ConvertOptions(
        column_types=dict.fromkeys(columns, pa.string()),
        include_columns=columns,
        strings_can_be_null=True,
        null_values=[""],
    )


def check_header(names: list[str]) -> None:
    """Raise InvalidInput when a header names a column twice (Arrow would give both the first
    one's values, and the second's would be lost without a word)."""
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise InvalidInput(f"the CSV header names column {repeated[0]!r} more than once")


def read_csv_text(data: bytes) -> pa.Table:
    """A whole CSV document (header first) as a table of text columns.

    Raises InvalidInput when it has no header, or a row with the wrong number of fields.
    """
    if not data.strip():
        raise InvalidInput("the CSV body is empty")
    if not data.endswith((b"\n", b"\r")):
        data += b"\n"  # Arrow cannot tell a lone header line without its newline from no data
    try:
        header = pacsv.open_csv(
            io.BytesIO(data), parse_options=pacsv.ParseOptions(newlines_in_values=True)
        ).schema.names
        check_header(header)
        return pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=text_convert_options(list(header)),
        )
    except pa.ArrowInvalid as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise InvalidInput(f"unreadable CSV: {first}") from None
