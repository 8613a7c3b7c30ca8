"""read_csv_text: every cell stays text, only an empty field is null, and a broken document is
refused as a whole naming the problem."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlserve.errors import InvalidInput
from mlserve.inputs import read_csv_text, text_convert_options


def test_a_header_alone_is_a_table_of_no_rows() -> None:
    table = read_csv_text(b"a,b\n")
    assert table.column_names == ["a", "b"]
    assert table.num_rows == 0
    assert table.schema.types == [pa.string(), pa.string()]


def test_a_header_without_a_final_newline_is_a_table_of_no_rows() -> None:
    table = read_csv_text(b"a,b")
    assert table.column_names == ["a", "b"]
    assert table.num_rows == 0


def test_every_cell_stays_text_as_written() -> None:
    table = read_csv_text(b"n,flag,code\n007,True,1e3\n-0,yes, 2.5 \n")
    assert table.schema.types == [pa.string()] * 3
    assert table.to_pydict() == {
        "n": ["007", "-0"],
        "flag": ["True", "yes"],
        "code": ["1e3", " 2.5 "],
    }


def test_quoted_fields_keep_commas_quotes_and_newlines() -> None:
    document = b'a,b\n"x,y","say ""hi"""\n"two\nlines","  padded  "\n'
    assert read_csv_text(document).to_pydict() == {
        "a": ["x,y", "two\nlines"],
        "b": ['say "hi"', "  padded  "],
    }


def test_only_an_empty_field_is_null() -> None:
    document = b'a,b\n,NA\n"",null\nNaN,None\n'
    assert read_csv_text(document).to_pydict() == {
        "a": [None, None, "NaN"],
        "b": ["NA", "null", "None"],
    }


def test_line_endings_and_a_missing_final_newline_do_not_matter() -> None:
    expected = {"a": ["1", "3"], "b": ["2", "4"]}
    assert read_csv_text(b"a,b\r\n1,2\r\n3,4\r\n").to_pydict() == expected
    assert read_csv_text(b"a,b\n1,2\n3,4").to_pydict() == expected


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (b"a,b\n1,2,3\n", "Expected 2 columns, got 3: 1,2,3"),
        (b"a,b\n1,2\n3\n", "Expected 2 columns, got 1: 3"),
    ],
)
def test_a_ragged_row_refuses_the_document_naming_it(document: bytes, problem: str) -> None:
    with pytest.raises(InvalidInput, match=r"^unreadable CSV: ") as raised:
        read_csv_text(document)
    assert problem in str(raised.value)


@pytest.mark.parametrize("document", [b"", b"  \n", b"\n\n"])
def test_an_empty_document_is_refused(document: bytes) -> None:
    with pytest.raises(InvalidInput, match=r"^the CSV body is empty$"):
        read_csv_text(document)


def test_a_repeated_column_name_never_loses_a_value() -> None:
    with pytest.raises(InvalidInput, match="names column 'a' more than once"):
        read_csv_text(b"a,a\n1,2\n")


@settings(max_examples=150, deadline=None)
@given(
    texts=st.lists(
        # pandas writes a lone "\r" unquoted, which no reader (pandas included) reads back;
        # lone surrogates are not text a document can hold.
        st.text(st.characters(exclude_characters="\r", exclude_categories=["Cs"]), max_size=6),
        min_size=1,
        max_size=5,
    )
)
def test_text_pandas_writes_is_read_back_as_it_was(texts: list[str]) -> None:
    frame = pd.DataFrame({"a": texts, "b": ["k"] * len(texts)})
    table = read_csv_text(frame.to_csv(index=False).encode())
    assert table.column("a").to_pylist() == [text if text else None for text in texts]


def test_text_convert_options_read_only_the_named_columns_as_text() -> None:
    document = b"id,a,b\n1,2,NA\n3,,x\n"
    table = pacsv.read_csv(io.BytesIO(document), convert_options=text_convert_options(["a", "b"]))
    assert table.column_names == ["a", "b"]
    assert table.to_pydict() == {"a": ["2", None], "b": ["NA", "x"]}
