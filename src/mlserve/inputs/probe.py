"""Ask a loaded model what it takes, by trying it: which features it fills in when missing, and
whether it computes in float32.

The answers come from the model's own ``predict``, not from reading its pipeline: an imputer
anywhere before the estimator, an estimator that splits on NaN (HistGradientBoosting, or a
scikit-learn 1.4+ forest trained with missing values) and a custom model all answer the same
way. Probing costs a few calls on a handful of rows when the model loads; a row the model
refuses is found by halving the probe rows, as batch scoring does.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from mlserve.inputs.checker import InputPolicy, ModelLimits, RowChecker
from mlserve.runtimes import Batch, Runtime
from mlserve.types import Signature

HUGE = 1e300
"""A finite float64 value no float32 can hold: a model that refuses it computes in float32."""

_PERMISSIVE = InputPolicy(unknown_categories="accept")


def build_checker(
    runtime: Runtime, profile: dict[str, Any] | None, policy: InputPolicy
) -> RowChecker:
    """The input checker of a loaded model: its signature, its probed limits and ``policy``."""
    return RowChecker(runtime.signature, probe_limits(runtime, profile), policy)


def reference_row(signature: Signature, profile: dict[str, Any] | None) -> dict[str, Any]:
    """One complete row: each feature's first value in the reference sample, else 0 (numbers),
    the first category, or false."""
    sample = (profile or {}).get("sample") or {}
    columns = sample.get("columns") or []
    rows = sample.get("rows") or []
    row: dict[str, Any] = {}
    for feature in signature.inputs:
        value: Any = None
        if feature.name in columns:
            at = columns.index(feature.name)
            value = next((r[at] for r in rows if r[at] is not None), None)
        if value is None:
            if feature.kind == "categorical":
                value = feature.categories[0] if feature.categories else "unknown"
            else:
                value = 0.0
        row[feature.name] = value
    return row


def reference_batch(signature: Signature, profile: dict[str, Any] | None) -> Batch:
    """:func:`reference_row` as the model takes it (for warming a model up)."""
    return _model_input(signature, [reference_row(signature, profile)])


def probe_limits(runtime: Runtime, profile: dict[str, Any] | None) -> ModelLimits:
    """What the model takes; a model that refuses its own reference row is assumed to fill in
    only the features that had missing values in training, and to compute in float32."""
    signature = runtime.signature
    base = reference_row(signature, profile)
    fallback = ModelLimits(
        fills_missing=frozenset(f.name for f in signature.inputs if f.nullable), float32=True
    )
    if not _answers(runtime, _model_input(signature, [base])):
        return fallback
    names = signature.feature_names
    holes = [{**base, name: None} for name in names]
    fills = _answering_rows(runtime, signature, holes)
    numeric = [f.name for f in signature.inputs if f.kind == "numeric"]
    huge = {**base, **dict.fromkeys(numeric, HUGE)}
    float32 = bool(numeric) and not _answers(runtime, _model_input(signature, [huge]))
    return ModelLimits(
        fills_missing=frozenset(names[i] for i in fills),
        float32=float32,
    )


def _model_input(signature: Signature, rows: list[dict[str, Any]]) -> Batch:
    everything = ModelLimits(fills_missing=frozenset(signature.feature_names))
    return RowChecker(signature, everything, _PERMISSIVE).check_records(rows).batch


def _answering_rows(
    runtime: Runtime, signature: Signature, rows: list[dict[str, Any]], offset: int = 0
) -> list[int]:
    """Positions of the rows the model answers, halving the probe until failures are alone."""
    if not rows:
        return []
    if _answers(runtime, _model_input(signature, rows)):
        return list(range(offset, offset + len(rows)))
    if len(rows) == 1:
        return []
    middle = len(rows) // 2
    return [
        *_answering_rows(runtime, signature, rows[:middle], offset),
        *_answering_rows(runtime, signature, rows[middle:], offset + middle),
    ]


def _answers(runtime: Runtime, batch: Batch) -> bool:
    """True when the model predicts ``batch`` without an error and with finite numbers."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # Probing feeds the model values it may dislike; what it says about them is the answer,
        # not something to print.
        warnings.simplefilter("ignore")
        try:
            outputs = [runtime.predict(batch)]
            if runtime.has_proba:
                outputs.append(runtime.predict_proba(batch))
        except Exception:  # any refusal is an answer: the model does not take these rows
            return False
    return all(
        len(o) == len(batch) and (o.dtype.kind not in "fc" or bool(np.isfinite(o).all()))
        for o in (np.asarray(x) for x in outputs)
    )
