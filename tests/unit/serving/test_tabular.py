"""Request shapes: columns named by position, and Parquet bodies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlserve.errors import InvalidInput
from mlserve.inputs import InputPolicy, ModelLimits, RowChecker
from mlserve.serving.tabular import TabularSchema, read_parquet
from mlserve.types import Feature, Signature, default_feature_names


def schema(names: list[str], extra_columns: str = "ignore") -> TabularSchema:
    """A schema of numeric features ``names``."""
    signature = Signature(tuple(Feature(name=n, dtype="float64") for n in names))
    policy = InputPolicy.from_rules({"extra_columns": extra_columns})
    return TabularSchema(RowChecker(signature, ModelLimits(), policy))


@given(st.permutations(range(5)), st.booleans())
def test_default_names_take_columns_by_their_number_in_any_order(
    order: list[int], as_text: bool
) -> None:
    names = default_feature_names(5)
    columns = [str(i) if as_text else i for i in order]
    assert schema(names).by_position(columns) == [names[i] for i in order]
    values = {c: [float(i)] for c, i in zip(columns, order, strict=True)}
    checked = schema(names).from_columns(values)
    np.testing.assert_array_equal(np.asarray(checked.accepted_batch()), [[0, 1, 2, 3, 4]])


@pytest.mark.parametrize(
    ("names", "columns"),
    [
        (["a", "b"], [0, 1]),  # real names: a reordered frame would be scored silently wrong
        (["f0", "f1"], [0, 1, 2]),
        (["f0", "f1"], [1, 2]),
        (["f0", "f1"], [0, 0]),
        (["f0", "f1"], [0.0, 1.0]),
        (["f0", "f1"], [False, True]),
        (["f0", "f1"], ["0", "01"]),
        (["f0", "f1"], ["0", "١"]),  # an Arabic-Indic one is a digit, not a column number
    ],
)
def test_columns_are_taken_by_position_only_when_nothing_else_names_them(
    names: list[str], columns: list[object]
) -> None:
    assert schema(names).by_position(columns) is None


def test_records_and_splits_of_an_unnamed_frame() -> None:
    names = default_feature_names(3)
    frame = pd.DataFrame([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])[[2, 0, 1]]
    records = [{str(k): v for k, v in row.items()} for row in frame.to_dict(orient="records")]
    by_records = schema(names).from_rows(records)
    split = frame.to_dict(orient="split")
    by_split = schema(names).from_split(split["columns"], split["data"])
    for checked in (by_records, by_split):
        np.testing.assert_array_equal(
            np.asarray(checked.accepted_batch()), [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
        )


def test_parquet_leaves_the_pandas_index_out() -> None:
    frame = pd.DataFrame({"x1": [1.0, 2.0], "x2": [3.0, 4.0]}, index=pd.Index([7, 9], name="row"))
    table = read_parquet(frame.to_parquet())
    assert table.column_names == ["x1", "x2"]
    checked = schema(["x1", "x2"], extra_columns="reject").from_table(table)
    assert checked.all_accepted


def test_a_body_that_is_not_parquet_names_it() -> None:
    with pytest.raises(InvalidInput, match="not a Parquet file"):
        read_parquet(b"x1,x2\n1,2\n")
