"""Turn decoded inputs (OIP tensors, JSON instances, MLflow frames) into rows in signature order.

One place decides what a tabular model accepts, so every protocol validates the same way and
names the feature at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlserve.errors import InvalidInput
from mlserve.runtimes import Batch
from mlserve.serving.protocol import Tensor
from mlserve.types import Signature

NanPolicy = Literal["reject", "allow", "nullable"]

DEFAULT_INPUT = "input-0"
"""Name of the single 2-D tensor holding every feature."""
NO_ROWS = "the request holds no rows"


@dataclass(frozen=True, slots=True)
class TabularSchema:
    """Everything looked up once per model: names, positions, which features are numeric."""

    signature: Signature
    nan_policy: NanPolicy
    input_name: str = DEFAULT_INPUT
    names: list[str] = field(init=False)
    """Feature names in signature order."""
    all_numeric: bool = field(init=False)
    """True when a numeric 2-D tensor can carry every feature."""

    def __post_init__(self) -> None:
        # Looked up on every request: computed once here, not per call.
        object.__setattr__(self, "names", self.signature.feature_names)
        object.__setattr__(self, "all_numeric", self.signature.is_all_numeric)

    def from_tensors(self, inputs: Sequence[Tensor]) -> Batch:
        """Rows from one 2-D tensor ``[rows, n_features]`` or one 1-D tensor per feature."""
        names = self.names
        if len(inputs) == 1 and (inputs[0].name not in names or len(inputs[0].shape) == 2):
            tensor = inputs[0]
            if len(tensor.shape) != 2 or tensor.shape[1] != len(names):
                raise InvalidInput(
                    f"input {tensor.name!r}: expected shape [rows, {len(names)}] "
                    f"(features {_preview(names)}), got {list(tensor.shape)}"
                )
            return self._from_matrix(tensor.data, tensor.datatype)
        columns: dict[str, np.ndarray] = {}
        for tensor in inputs:
            if tensor.name not in names:
                raise InvalidInput(
                    f"input {tensor.name!r} is not a feature of this model "
                    f"(features: {_preview(names)})"
                )
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

    def from_columns(self, columns: dict[str, Any]) -> Batch:
        """Rows from a mapping of feature name to a column of values."""
        missing = [n for n in self.names if n not in columns]
        if missing:
            raise InvalidInput(f"missing feature(s): {', '.join(missing)}")
        scalars = [
            n
            for n in self.names
            if isinstance(columns[n], str) or not isinstance(columns[n], Sequence | np.ndarray)
        ]
        if scalars:
            raise InvalidInput(f"feature {scalars[0]!r} must be a list of values, one per row")
        lengths = {len(columns[n]) for n in self.names}
        if len(lengths) != 1:
            raise InvalidInput("every feature must have the same number of rows")
        if lengths == {0}:
            raise InvalidInput(NO_ROWS)
        frame = pd.DataFrame({n: _column(columns[n], f.kind, n) for n, f in self._features()})
        self._check_missing_values(frame)
        return frame

    def from_rows(self, rows: Any) -> Batch:
        """Rows from a list of lists (signature order) or a list of records (by feature name)."""
        if not isinstance(rows, list) or not rows:
            raise InvalidInput("instances must be a non-empty list of rows")
        first = rows[0]
        if isinstance(first, dict):
            if not all(isinstance(r, dict) for r in rows):
                raise InvalidInput("every instance must be an object when the first one is")
            unknown = sorted({k for r in rows for k in r} - set(self.names))
            if unknown:
                raise InvalidInput(f"unknown feature(s): {', '.join(unknown[:10])}")
            missing = [n for n in self.names if any(n not in r for r in rows)]
            if missing:
                raise InvalidInput(f"missing feature(s): {', '.join(missing)}")
            return self.from_columns({n: [r[n] for r in rows] for n in self.names})
        if not isinstance(first, list):
            rows = [rows]  # a single row sent as a flat list
        widths = {len(r) if isinstance(r, list) else -1 for r in rows}
        if widths != {len(self.names)}:
            raise InvalidInput(
                f"each instance must list {len(self.names)} feature values ({_preview(self.names)})"
            )
        if self.all_numeric:
            try:
                matrix = np.asarray(rows, dtype=np.float64)
            except (TypeError, ValueError):
                return self.from_columns(
                    dict(zip(self.names, zip(*rows, strict=True), strict=True))
                )
            return self._from_matrix(matrix, "FP64")
        return self.from_columns({n: [r[i] for r in rows] for i, n in enumerate(self.names)})

    def from_frame(self, frame: pd.DataFrame) -> Batch:
        """Rows from a frame with (at least) the signature's columns, in any order."""
        missing = [n for n in self.names if n not in frame.columns]
        if missing:
            raise InvalidInput(f"missing feature column(s): {', '.join(missing)}")
        return self.from_columns({n: frame[n].to_numpy() for n in self.names})

    def _features(self) -> list[tuple[str, Any]]:
        return [(f.name, f) for f in self.signature.inputs]

    def _from_matrix(self, matrix: np.ndarray, datatype: str) -> Batch:
        if len(matrix) == 0:
            raise InvalidInput(NO_ROWS)
        if datatype != "BYTES" and self.all_numeric:
            array = matrix.astype(np.float64, copy=False)
            self._check_matrix(array)
            return array
        return self.from_columns({n: matrix[:, i] for i, n in enumerate(self.names)})

    def _check_matrix(self, array: np.ndarray) -> None:
        if self.nan_policy == "allow":
            return
        finite = np.isfinite(array)
        if finite.all():
            return
        bad_rows, bad_cols = np.nonzero(~finite)
        for row, col in zip(bad_rows.tolist(), bad_cols.tolist(), strict=True):
            feature = self.signature.inputs[col]
            value = array[row, col]
            if np.isinf(value) or self.nan_policy == "reject" or not feature.nullable:
                raise InvalidInput(
                    f"feature {feature.name!r} (row {row}) is {value}; "
                    f"{'infinite values are' if np.isinf(value) else 'missing values are'} not accepted"
                )

    def _check_missing_values(self, frame: pd.DataFrame) -> None:
        if self.nan_policy == "allow":
            return
        for feature in self.signature.inputs:
            column = frame[feature.name]
            if feature.kind == "categorical":
                nulls = column.isna().to_numpy()
            else:
                values = column.to_numpy(dtype=np.float64)
                if np.isinf(values).any():
                    row = int(np.nonzero(np.isinf(values))[0][0])
                    raise InvalidInput(
                        f"feature {feature.name!r} (row {row}) is infinite; not accepted"
                    )
                nulls = np.isnan(values)
            if nulls.any() and (self.nan_policy == "reject" or not feature.nullable):
                row = int(np.nonzero(nulls)[0][0])
                raise InvalidInput(
                    f"feature {feature.name!r} (row {row}) is missing; "
                    "this model was trained without missing values there"
                )


def _column(values: Any, kind: str, name: str) -> Any:
    """Numeric features as float64 (naming the feature that will not convert); others as given."""
    if kind == "categorical":
        if any(isinstance(v, list | dict) for v in values):
            raise InvalidInput(
                f"feature {name!r} must hold one value per row, not lists or objects"
            )
        return [v.decode() if isinstance(v, bytes) else v for v in values]
    try:
        array = np.asarray(values)
    except ValueError:  # ragged nesting
        raise InvalidInput(f"feature {name!r} must hold one number per row") from None
    if array.ndim != 1:
        raise InvalidInput(f"feature {name!r} must hold one number per row")
    if array.dtype.kind in "biuf":
        return array.astype(np.float64, copy=False)
    try:
        return np.asarray(
            [
                np.nan if v is None else float(v.decode() if isinstance(v, bytes) else v)
                for v in array
            ],
            dtype=np.float64,
        )
    except (TypeError, ValueError):
        raise InvalidInput(f"feature {name!r} must be numeric") from None


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, …" if len(names) > limit else shown
