"""Describe a dataset: its features (for signatures), a reference profile and a fingerprint."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pandas as pd

from mlserve.types import MAX_CATEGORIES, Feature

SAMPLE_ROWS = 1000
"""Training rows kept in a reference profile for drift tests."""
HISTOGRAM_BINS = 20


def feature_kind(series: pd.Series) -> str:
    """numeric, boolean or categorical, from a column's dtype."""
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    return "categorical"


def describe_features(frame: pd.DataFrame) -> tuple[Feature, ...]:
    """The signature inputs of a frame: name, dtype, kind and seen categories, in column order."""
    features = []
    for name in frame.columns:
        series = frame[name]
        kind = feature_kind(series)
        categories: tuple[str, ...] = ()
        if kind == "categorical":
            seen = series.dropna().astype(str).unique()
            categories = tuple(sorted(seen)[:MAX_CATEGORIES])
        dtype = "string" if kind == "categorical" else str(series.dtype)
        features.append(
            Feature(
                name=str(name),
                dtype=dtype,
                kind=kind,  # type: ignore[arg-type]  # feature_kind returns one of the literals
                categories=categories,
                nullable=bool(series.isna().any()),
            )
        )
    return tuple(features)


def build_reference_profile(
    frame: pd.DataFrame, *, sample_rows: int = SAMPLE_ROWS, seed: int = 0
) -> dict[str, Any]:
    """Per-feature statistics plus a bounded, seeded sample of rows, as JSON-ready data."""
    features: dict[str, Any] = {}
    for name in frame.columns:
        series = frame[name]
        kind = feature_kind(series)
        stats: dict[str, Any] = {
            "kind": kind,
            "count": int(series.notna().sum()),
            "nulls": int(series.isna().sum()),
        }
        if kind == "numeric":
            values = series.dropna().astype(np.float64)
            finite = values[np.isfinite(values)]
            stats["infinite"] = int(len(values) - len(finite))
            stats.update(_numeric_stats(finite))
        else:
            counts = series.dropna().astype(str).value_counts().head(MAX_CATEGORIES)
            stats["frequencies"] = {str(k): int(v) for k, v in counts.items()}
        features[str(name)] = stats
    sample = (
        frame.sample(n=min(sample_rows, len(frame)), random_state=seed) if len(frame) else frame
    )
    return {
        "rows": len(frame),
        "features": features,
        "sample": {
            "columns": [str(c) for c in sample.columns],
            "rows": [[_json_value(v) for v in row] for row in sample.itertuples(index=False)],
        },
    }


def fingerprint_frame(frame: pd.DataFrame) -> str:
    """A sha256 over column names, dtypes and every value: equal data, equal fingerprint."""
    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def _numeric_stats(values: pd.Series) -> dict[str, Any]:
    if values.empty:
        return {"mean": None, "std": None, "min": None, "max": None, "quantiles": {}}
    quantiles = values.quantile([0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
    counts, edges = np.histogram(values.to_numpy(), bins=HISTOGRAM_BINS)
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=0)),
        "min": float(values.min()),
        "max": float(values.max()),
        "quantiles": {f"{q:g}": float(v) for q, v in quantiles.items()},
        "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
    }


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (int, float, str, bool)):
        return value
    return str(value)
