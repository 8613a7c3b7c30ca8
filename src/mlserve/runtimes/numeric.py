"""Rows as a float64 matrix in signature order, for runtimes whose models take numbers only
(XGBoost's and LightGBM's boosters)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mlserve.errors import ArtifactError, InvalidInput
from mlserve.runtimes.base import Batch
from mlserve.types import Signature


def numeric_names(signature: Signature, framework: str) -> list[str]:
    """The signature's feature names; raises ArtifactError when a feature is categorical (text
    the model cannot take: such models need their categories encoded as numbers first)."""
    text = [f.name for f in signature.inputs if f.kind == "categorical"]
    if text:
        raise ArtifactError(
            f"the {framework} runtime takes numeric features only, and the signature has "
            f"categorical one(s): {', '.join(text[:5])}"
        )
    return signature.feature_names


def booster_names(
    signature: Signature, framework: str, n_features: int, feature_names: Sequence[str] | None
) -> list[str]:
    """The signature's feature names for a booster that takes ``n_features`` numbers (named
    ``feature_names``, when it kept names); raises ArtifactError when they do not fit."""
    names = numeric_names(signature, framework)
    if len(names) != n_features:
        raise ArtifactError(
            f"the {framework} model takes {n_features} features, the signature names {len(names)}"
        )
    if feature_names is not None and list(feature_names) != names:
        raise ArtifactError(
            f"the {framework} model's feature names differ from the signature's: "
            f"{', '.join(feature_names[:5])} against {', '.join(names[:5])}"
        )
    return names


def numeric_matrix(batch: Batch, names: list[str]) -> np.ndarray:
    """``batch`` as a 2-D float64 array with the columns ``names`` in order; NaN is missing.

    A frame is taken by column name; an array must already be in that order (one flat row is
    one row). Raises InvalidInput for another shape or values that are not numbers.
    """
    if isinstance(batch, pd.DataFrame):
        missing = [n for n in names if n not in batch.columns]
        if missing:
            raise InvalidInput(f"rows lack the feature(s): {', '.join(missing[:5])}")
        frame = batch[names]
        if all(dtype == np.float64 for dtype in frame.dtypes):
            # A frame's block is column-major; the boosters read rows.
            return np.ascontiguousarray(frame.to_numpy(dtype=np.float64))
        return np.column_stack([_numbers(frame[n].to_numpy(), n) for n in names])
    array = np.asarray(batch)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[1] != len(names):
        raise InvalidInput(
            f"expected rows of {len(names)} features "
            f"({', '.join(names[:5])}{', …' if len(names) > 5 else ''}), "
            f"got shape {list(array.shape)}"
        )
    if array.dtype == np.float64:
        return array
    if array.dtype.kind in "iub" or array.dtype == np.float32:
        return array.astype(np.float64)
    return np.column_stack([_numbers(array[:, i], n) for i, n in enumerate(names)])


def _numbers(values: np.ndarray, name: str) -> np.ndarray:
    """One column as float64: numbers as they are, None and NaN as NaN, numeric text parsed."""
    if values.dtype.kind in "fiub":
        return values.astype(np.float64)
    try:
        parsed = pd.to_numeric(pd.Series(values, dtype=object), errors="raise")
    except (ValueError, TypeError):
        raise InvalidInput(f"feature {name!r} holds values that are not numbers") from None
    return parsed.to_numpy(dtype=np.float64, na_value=np.nan)
