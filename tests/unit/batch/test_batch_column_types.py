"""Carried CSV columns get a type per chunk only when the type keeps what every cell says."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given
from hypothesis import strategies as st

from mlserve.batch.column_types import inferred, with_inferred_types

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def text(*cells: str | None) -> pa.ChunkedArray:
    """A text column of ``cells`` in two pieces, as a chunk cut from two reader batches is."""
    middle = len(cells) // 2
    return pa.chunked_array(
        [pa.array(cells[:middle], pa.string()), pa.array(cells[middle:], pa.string())]
    )


@given(st.lists(st.one_of(INT64, st.none()), min_size=1))
def test_canonical_integers_become_int64_and_write_back_as_the_same_text(
    numbers: list[int | None],
) -> None:
    cells = [None if n is None else str(n) for n in numbers]
    typed = inferred(text(*cells))
    assert typed.type == pa.int64()
    assert typed.to_pylist() == numbers
    assert pc.cast(typed, pa.string()).to_pylist() == cells


def test_plain_decimals_become_float64() -> None:
    typed = inferred(text("1.5", "-2e-3", "3", None, "0.000123456789012345", "1.50E+2"))
    assert typed.type == pa.float64()
    assert typed.to_pylist() == [1.5, -0.002, 3.0, None, 0.000123456789012345, 150.0]


def test_cells_a_number_would_not_keep_leave_their_column_text() -> None:
    for cell in (
        "007",  # the leading zeros are part of the id
        "+5",
        ".5",
        "5.",
        " 5",
        "1_000",
        "0x10",
        "inf",
        "nan",
        "1e400",  # not finite as a float64
        "9223372036854775808",  # beyond int64, and more digits than float64 keeps
        "0.1234567890123456",  # 16 significant digits
        "A-17",
    ):
        column = text("1", cell, "2")
        assert inferred(column) is column, cell


def test_empty_cells_do_not_count_and_an_empty_column_is_int64() -> None:
    assert inferred(text("1", None, "2")).to_pylist() == [1, None, 2]
    empty = inferred(text(None, None))
    assert (empty.type, empty.to_pylist()) == (pa.int64(), [None, None])


def test_only_the_named_text_columns_are_typed() -> None:
    table = pa.table({"id": text("1", "2"), "f0": text("3", "4"), "n": pa.array([5, 6])})
    typed = with_inferred_types(table, ["id", "n", "absent"])
    assert typed.schema == pa.schema([("id", pa.int64()), ("f0", pa.string()), ("n", pa.int64())])
    assert typed.column("f0").to_pylist() == ["3", "4"]
