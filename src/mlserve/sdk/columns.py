"""A DataFrame's columns as the SDK sends them: to the input checker in this process, or as
tensors to a server."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def column_values(series: pd.Series) -> np.ndarray:
    """A column as the input checker reads it: numpy numbers and booleans as they are; anything
    else (text, categories, pandas' nullable types) as Python values with None where missing,
    which the checker reads as it reads a JSON column."""
    if is_plain_numeric(series):
        return series.to_numpy()
    values: np.ndarray = series.astype(object).where(series.notna(), None).to_numpy()
    return values


def is_plain_numeric(series: pd.Series) -> bool:
    """True for a numpy integer, float or boolean column (NaN is its only missing value)."""
    return isinstance(series.dtype, np.dtype) and series.dtype.kind in "fiub"


def is_numeric(series: pd.Series) -> bool:
    """True for numbers and booleans of any dtype, pandas' nullable ones included."""
    return pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


def as_float64(series: pd.Series) -> np.ndarray:
    """A numeric column as float64, NaN where missing (booleans as 1.0 and 0.0)."""
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def as_texts(series: pd.Series) -> list[bytes]:
    """Each value as UTF-8 text, as ``mlserve train`` stored categories (``str(value)``: ``3``,
    ``2.5``, ``True``); a missing value as empty text, which every door reads as missing."""
    return [_text(v) for v in column_values(series).tolist()]


def _text(value: Any) -> bytes:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return b""
    return value if isinstance(value, bytes) else str(value).encode()
