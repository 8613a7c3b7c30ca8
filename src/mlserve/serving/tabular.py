"""Turn each protocol's request shape (OIP tensors, JSON rows or records, MLflow frames, CSV)
into columns for the model's input checker (``mlserve.inputs``), which judges every row.

This module only knows shapes: which tensor or key holds which feature. What a value means,
and whether a row is accepted, is decided in ``mlserve.inputs`` for every door alike. The rows
come back with their verdicts; ``ServedVersion.predict`` answers a request with a rejected row
400 naming the first rejected row, once it also knows which of the others the model refuses.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mlserve.errors import InvalidInput
from mlserve.inputs import CheckedRows, RowChecker
from mlserve.serving.protocol import Tensor
from mlserve.types import default_feature_names

DEFAULT_INPUT = "input-0"
"""Name of the single 2-D tensor holding every feature."""
NO_ROWS = "the request holds no rows"


@dataclass(frozen=True, slots=True)
class TabularSchema:
    """A served model's input shapes, over its input checker: each ``from_*`` gives the rows
    with each one's verdict, and raises InvalidInput only for a request of the wrong shape."""

    checker: RowChecker

    input_name: str = DEFAULT_INPUT

    @property
    def names(self) -> list[str]:
        """Feature names in signature order."""
        return self.checker.names

    @property
    def all_numeric(self) -> bool:
        """True when a numeric 2-D tensor can carry every feature."""
        return self.checker.all_numeric

    def from_tensors(self, inputs: Sequence[Tensor]) -> CheckedRows:
        """Rows from one 2-D tensor ``[rows, n_features]`` or one 1-D tensor per column."""
        names = self.names
        if len(inputs) == 1 and (inputs[0].name not in names or len(inputs[0].shape) == 2):
            tensor = inputs[0]
            if len(tensor.shape) != 2 or tensor.shape[1] != len(names):
                raise InvalidInput(
                    f"input {tensor.name!r}: expected shape [rows, {len(names)}] "
                    f"(features {_preview(names)}), got {list(tensor.shape)}"
                )
            return self._from_matrix(tensor.data)
        columns: dict[str, np.ndarray] = {}
        for tensor in inputs:
            data = tensor.data
            if data.ndim == 2 and data.shape[1] == 1:
                data = data[:, 0]
            if data.ndim != 1:
                raise InvalidInput(
                    f"input {tensor.name!r}: a per-feature tensor must have shape [rows], "
                    f"got {list(tensor.shape)}"
                )
            columns[tensor.name] = data
        return self.from_columns(columns)

    def from_columns(self, columns: dict[str, Any]) -> CheckedRows:
        """Rows from a mapping of column name to its values, one per row."""
        names = self.names
        if names and names[0] not in columns:
            positional = self.by_position(list(columns))
            if positional is not None:
                columns = dict(zip(positional, columns.values(), strict=True))
        lengths = set()
        for name, values in columns.items():
            if isinstance(values, str | bytes | dict) or not isinstance(
                values, Sequence | np.ndarray | pa.Array | pa.ChunkedArray
            ):
                raise InvalidInput(f"column {name!r} must be a list of values, one per row")
            lengths.add(len(values))
        if len(lengths) > 1:
            raise InvalidInput("every column must have the same number of rows")
        rows = lengths.pop() if lengths else 0
        if rows == 0:
            raise InvalidInput(NO_ROWS)
        return self.checker.check_columns(columns, rows, extra=list(columns))

    def from_rows(self, rows: Any, *, may_hold_booleans: bool = True) -> CheckedRows:
        """Rows from a list of lists (signature order) or a list of records (by name).

        ``may_hold_booleans`` False promises that the JSON body had no true/false anywhere, so
        a list of numbers can be read as one float matrix (numpy would read true as 1.0).
        """
        if not isinstance(rows, list) or not rows:
            raise InvalidInput("instances must be a non-empty list of rows")
        first = rows[0]
        if isinstance(first, dict):
            if not all(isinstance(r, dict) for r in rows):
                raise InvalidInput("every instance must be an object when the first one is")
            names = self.names
            positional = None if names[0] in first else self.by_position(list(first))
            if positional is not None:
                rename = dict(zip(first, positional, strict=True))
                rows = [{rename.get(k, k): v for k, v in r.items()} for r in rows]
            return self.checker.check_records(rows)
        if not isinstance(first, list):
            rows = [rows]  # a single row sent as a flat list
        width = len(self.names)
        if any(not isinstance(r, list) or len(r) != width for r in rows):
            raise InvalidInput(
                f"each instance must list {width} feature values ({_preview(self.names)})"
            )
        if self.checker.all_numeric and not may_hold_booleans:
            matrix = np.asarray(rows)
            if matrix.dtype.kind in "fiu" and matrix.ndim == 2:  # numbers only: no text, no null
                return self._from_matrix(matrix)
        return self.from_columns({name: [r[i] for r in rows] for i, name in enumerate(self.names)})

    def from_split(self, columns: Any, data: Any) -> CheckedRows:
        """Rows from MLflow's ``dataframe_split``: column names and rows of values."""
        if columns is None:
            columns = self.names
        elif isinstance(columns, list):
            columns = self.by_position(columns) or columns
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise InvalidInput("dataframe_split: 'columns' must be a list of names")
        if not isinstance(data, list) or not data:
            raise InvalidInput(NO_ROWS)
        if any(not isinstance(r, list) or len(r) != len(columns) for r in data):
            raise InvalidInput(
                f"dataframe_split: every row of 'data' must hold {len(columns)} values"
            )
        return self.from_columns({name: [r[i] for r in data] for i, name in enumerate(columns)})

    def from_table(self, table: pa.Table) -> CheckedRows:
        """Rows from an Arrow table (a CSV body read as text)."""
        if table.num_rows == 0:
            raise InvalidInput(NO_ROWS)
        return self.from_columns({name: table.column(name) for name in table.column_names})

    def by_position(self, columns: list[Any]) -> list[str] | None:
        """The feature names of columns named 0..n-1 (numbers or their text: what pandas gives
        a frame without column names, as MLflow's client sends one) when the model's features
        carry the default names f0..f{n-1}, so position is all either side knows; else None.

        A model with real feature names never takes columns by position: a frame with the
        columns in another order would be scored silently wrong.
        """
        names = self.names
        if len(columns) != len(names) or names != default_feature_names(len(names)):
            return None
        positions = [_position(c) for c in columns]
        if sorted(p for p in positions if p is not None) != list(range(len(names))):
            return None
        return [names[p] for p in positions if p is not None]

    def _from_matrix(self, matrix: np.ndarray) -> CheckedRows:
        if len(matrix) == 0:
            raise InvalidInput(NO_ROWS)
        if self.checker.all_numeric and matrix.dtype.kind in "fiu":
            return self.checker.check_matrix(matrix.astype(np.float64, copy=False))
        return self.from_columns({n: matrix[:, i] for i, n in enumerate(self.names)})


def read_parquet(body: bytes) -> pa.Table:
    """A Parquet body (what ``DataFrame.to_parquet`` writes) as a table of its columns.

    A pandas index stored as a column is left out: it names rows, not features, and would be
    an extra column. Raises InvalidInput when the body is not Parquet.
    """
    import pyarrow.parquet as pq  # here: only Parquet bodies need it, and it slows start-up

    try:
        table = pq.read_table(io.BytesIO(body))
    except (pa.ArrowInvalid, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise InvalidInput(f"the body is not a Parquet file: {first}") from None
    metadata = table.schema.pandas_metadata or {}
    index = {c for c in metadata.get("index_columns", []) if isinstance(c, str)}
    return table.drop_columns([c for c in table.column_names if c in index])


def _position(column: Any) -> int | None:
    """``3`` or ``"3"`` as 3; anything else (3.0, True, "03") as None."""
    if isinstance(column, bool):
        return None
    if isinstance(column, int | np.integer):
        return int(column)
    if isinstance(column, str) and column.isascii() and column.isdigit():
        return int(column) if str(int(column)) == column else None
    return None


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, …" if len(names) > limit else shown
