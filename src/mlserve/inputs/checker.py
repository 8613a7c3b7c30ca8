"""Turn incoming rows into a model's input, with one verdict per row: accepted, or rejected with
a reason naming the column and the value.

Every door (each serving protocol, ``mlserve predict``, batch jobs) checks rows here; they
differ only in what they do with a rejected row (a 400 naming it, an exit naming it, a line in
the rejects file). The rules, checked per row in this order, the first problem found being the
row's reason:

1. **Extra columns** (not features of the model): ignored, or with ``extra_columns: reject``
   the row is rejected. A table (CSV, Parquet, tensors, columns) without a column for some
   feature is refused as a whole: that is a wrong schema, not a row with a gap. A record (a
   JSON object) may leave a key out: that row's value is missing, as if it were null.
2. Per feature, in signature order, how its cells read (``values.py``): a list or object is
   never one value; a numeric feature refuses text that is no number (booleans are 1 and 0);
   a boolean feature refuses anything but true/false/yes/no/t/f and 0/1.
3. **Missing values**: accepted where the model fills them in itself (found by probing it at
   load, ``probe.py``: an imputer in its pipeline, or an estimator that takes NaN), else the
   row is rejected; ``missing_values: reject`` refuses them everywhere.
4. **Numbers** must be finite and within what the model computes in: a model that works in
   float32 (scikit-learn's trees and forests) refuses 1e308 where a float64 one takes it.
5. **Unknown categories** (a value training never saw, for a feature whose categories were all
   recorded): rejected by default, because a typo or a wrong code is the likely cause and
   scoring it silently answers a question nobody asked; ``unknown_categories: accept`` scores
   them as the pipeline does (its encoder ignores them) and flags them for counting.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlserve.errors import InvalidInput
from mlserve.inputs.values import Cells, category_texts, display, read_cells
from mlserve.runtimes import FLOAT32_BOUND, Batch
from mlserve.types import Feature, Signature

UnknownCategories = Literal["reject", "accept"]
ExtraColumns = Literal["ignore", "reject"]
MissingValues = Literal["model", "reject"]


@dataclass(frozen=True, slots=True)
class InputPolicy:
    """How a model's input is judged where the model itself has no say (see the module doc)."""

    unknown_categories: UnknownCategories = "reject"
    extra_columns: ExtraColumns = "ignore"
    missing_values: MissingValues = "model"

    @classmethod
    def from_rules(cls, rules: Mapping[str, str]) -> InputPolicy:
        """From ``Settings.input_rules_for`` (values already validated by the settings)."""
        return cls(**rules)  # type: ignore[arg-type]  # the settings' Literal types match ours


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """What the model itself takes, found by probing it when it loads (``probe.py``)."""

    fills_missing: frozenset[str] = frozenset()
    """Features where the model takes a missing value (it imputes it, or splits on NaN)."""
    float32: bool = False
    """The model computes in float32: values float32 cannot hold are refused."""


@dataclass(frozen=True, slots=True)
class CheckedRows:
    """Rows as the model takes them, with each row's verdict.

    ``batch`` holds every row; a rejected row's cells are placeholders (NaN or None), so use
    :meth:`accepted_batch` to predict.
    """

    batch: Batch
    rejected: np.ndarray
    """Boolean, one per row."""
    reasons: dict[int, str]
    """Why each rejected row was rejected (row position -> reason)."""
    unknown_categories: dict[str, np.ndarray] = field(default_factory=dict)
    """Accepted rows (under ``unknown_categories: accept``) holding a category training never
    saw, by feature: boolean masks over all rows."""

    @property
    def rows(self) -> int:
        """Rows checked."""
        return len(self.rejected)

    @property
    def all_accepted(self) -> bool:
        """True when no row was rejected."""
        return not self.reasons

    def accepted_positions(self) -> np.ndarray:
        """Positions of the accepted rows, in order."""
        return np.flatnonzero(~self.rejected)

    def rejections(self) -> list[tuple[int, str]]:
        """(position, reason) of every rejected row, in order."""
        return sorted(self.reasons.items())

    def accepted_batch(self) -> Batch:
        """The accepted rows as the model takes them."""
        if self.all_accepted:
            return self.batch
        positions = self.accepted_positions()
        if isinstance(self.batch, pd.DataFrame):
            return self.batch.iloc[positions].reset_index(drop=True)
        picked: np.ndarray = self.batch[positions]
        return picked


class _Verdicts:
    """Why each row is rejected; the first reason found wins."""

    def __init__(self, rows: int) -> None:
        self.rejected = np.zeros(rows, dtype=bool)
        self.reasons: dict[int, str] = {}

    def flag(self, mask: np.ndarray, reason: str) -> None:
        """Give ``reason`` to every row in ``mask`` that has none yet."""
        new = mask & ~self.rejected
        if new.any():
            for position in np.flatnonzero(new).tolist():
                self.reasons[position] = reason
            self.rejected |= new

    def flag_each(self, mask: np.ndarray, reason_of: Any) -> None:
        """Give each row in ``mask`` that has no reason yet its own, ``reason_of(row)``."""
        new = mask & ~self.rejected
        if new.any():
            for position in np.flatnonzero(new).tolist():
                self.reasons[position] = reason_of(position)
            self.rejected |= new


class RowChecker:
    """One model's input rules, built once per loaded version; safe to share between threads."""

    def __init__(self, signature: Signature, limits: ModelLimits, policy: InputPolicy) -> None:
        self.signature = signature
        self.limits = limits
        self.policy = policy
        self.names = signature.feature_names
        self.all_numeric = signature.is_all_numeric
        self._known = set(self.names)
        self._bound = FLOAT32_BOUND if limits.float32 else np.inf
        self._boolean_columns = [i for i, f in enumerate(signature.inputs) if f.kind == "boolean"]
        self._categories = {
            f.name: pa.array(f.categories, type=pa.string())
            for f in signature.inputs
            if f.has_closed_categories
        }

    def takes_missing(self, feature: str) -> bool:
        """True when a missing value of ``feature`` is accepted."""
        return self.policy.missing_values == "model" and feature in self.limits.fills_missing

    def check_matrix(self, matrix: np.ndarray) -> CheckedRows:
        """Rows of an all-numeric model given as a float64 matrix in signature order."""
        # One pass for the usual clean request: NaN, infinities and out-of-range values all
        # fail `abs < bound`; only then is each column looked at on its own.
        with np.errstate(invalid="ignore"):
            clean = bool((np.abs(matrix) < self._bound).all())
        if clean and all(_is_binary(matrix[:, i]) for i in self._boolean_columns):
            return CheckedRows(matrix, np.zeros(len(matrix), dtype=bool), {})
        verdicts = _Verdicts(len(matrix))
        for index, feature in enumerate(self.signature.inputs):
            column = matrix[:, index]
            self._judge_numbers(feature, read_cells(column), verdicts)
        return CheckedRows(matrix, verdicts.rejected, verdicts.reasons)

    def check_columns(
        self,
        columns: Mapping[str, Any],
        rows: int,
        extra: Sequence[str] = (),
        allowed: Collection[str] = (),
    ) -> CheckedRows:
        """Rows given as columns by name (numpy arrays, Arrow arrays or Python lists).

        ``extra`` names every column that came with them (which every row carries); those that
        are neither features nor ``allowed`` (a batch job's id and passthrough columns) are
        extra columns. Raises InvalidInput when a feature has no column at all.
        """
        absent = [n for n in self.names if n not in columns]
        if absent:
            raise InvalidInput(f"missing feature column(s): {_names(absent)}")
        verdicts = _Verdicts(rows)
        unknown_columns = [c for c in extra if c not in self._known and c not in allowed]
        if unknown_columns and self.policy.extra_columns == "reject":
            verdicts.flag(np.ones(rows, dtype=bool), _extra_reason(unknown_columns))
        return self._check(columns, rows, verdicts)

    def check_records(
        self, records: Sequence[Mapping[str, Any]], allowed: Collection[str] = ()
    ) -> CheckedRows:
        """Rows given as records (one mapping of column to value per row); keys that are
        neither features nor ``allowed`` are extra columns."""
        rows = len(records)
        verdicts = _Verdicts(rows)
        if self.policy.extra_columns == "reject":
            known = self._known | set(allowed)
            for position, record in enumerate(records):
                unknown = [k for k in record if k not in known]
                if unknown:
                    verdicts.reasons[position] = _extra_reason(unknown)
                    verdicts.rejected[position] = True
        columns = {n: [r.get(n) for r in records] for n in self.names}
        return self._check(columns, rows, verdicts)

    def _check(self, columns: Mapping[str, Any], rows: int, verdicts: _Verdicts) -> CheckedRows:
        unknown: dict[str, np.ndarray] = {}
        if self.all_numeric:
            batch: Batch = np.empty((rows, len(self.names)), dtype=np.float64, order="F")
            for index, feature in enumerate(self.signature.inputs):
                values = columns.get(feature.name)
                cells = read_cells(_nulls(rows) if values is None else values)
                _check_length(feature, cells.numbers, rows)
                batch[:, index] = self._judge_numbers(feature, cells, verdicts)
        else:
            frame: dict[str, Any] = {}
            for feature in self.signature.inputs:
                values = columns.get(feature.name)
                values = _nulls(rows) if values is None else values
                if feature.kind == "categorical":
                    frame[feature.name] = self._judge_categories(
                        feature, values, rows, verdicts, unknown
                    )
                else:
                    cells = read_cells(values)
                    _check_length(feature, cells.numbers, rows)
                    frame[feature.name] = self._judge_numbers(feature, cells, verdicts)
            batch = pd.DataFrame(frame)
        accepted_unknown = {
            name: mask & ~verdicts.rejected
            for name, mask in unknown.items()
            if (mask & ~verdicts.rejected).any()
        }
        return CheckedRows(batch, verdicts.rejected, verdicts.reasons, accepted_unknown)

    def _judge_numbers(self, feature: Feature, cells: Cells, verdicts: _Verdicts) -> np.ndarray:
        """A numeric or boolean feature's values as float64; rows it cannot give are flagged."""
        name = feature.name
        verdicts.flag(cells.nested, f"feature {name!r} must be one value, not a list or object")
        numbers = cells.numbers
        if feature.kind == "boolean":
            wrong = cells.invalid | (~cells.missing & ~_binary_mask(numbers))
            verdicts.flag_each(
                wrong, lambda row: f"feature {name!r} is not a boolean: {cells.quoted(row)}"
            )
        else:
            verdicts.flag_each(
                cells.invalid | cells.words,
                lambda row: f"feature {name!r} is not a number: {cells.quoted(row)}",
            )
        if cells.missing.any() and not self.takes_missing(name):
            verdicts.flag(cells.missing, self._missing_reason(name))
        with np.errstate(invalid="ignore"):
            beyond = ~(np.abs(numbers) < self._bound) & ~np.isnan(numbers)
        if beyond.any():
            infinite = np.isinf(numbers)
            verdicts.flag_each(
                beyond & infinite,
                lambda row: f"feature {name!r} is not finite: {display(numbers[row])!r}",
            )
            verdicts.flag_each(
                beyond & ~infinite,
                lambda row: (
                    f"feature {name!r} is out of range: {display(numbers[row])!r} "
                    "(this model computes in float32, which holds at most ±3.4e+38)"
                ),
            )
        return numbers

    def _judge_categories(
        self,
        feature: Feature,
        values: Any,
        rows: int,
        verdicts: _Verdicts,
        unknown: dict[str, np.ndarray],
    ) -> np.ndarray:
        """A categorical feature's values as text (NaN where missing); rows are flagged."""
        name = feature.name
        texts, missing, nested = category_texts(values)
        _check_length(feature, texts, rows)
        verdicts.flag(nested, f"feature {name!r} must be one value, not a list or object")
        if missing.any() and not self.takes_missing(name):
            verdicts.flag(missing, self._missing_reason(name))
        known = self._categories.get(name)
        if known is not None:
            present = ~missing & ~nested
            seen = np.asarray(
                pc.fill_null(
                    pc.is_in(pa.array(texts, type=pa.string(), from_pandas=True), value_set=known),
                    False,
                ).to_numpy(zero_copy_only=False),
                dtype=bool,
            )
            strange = present & ~seen
            if strange.any():
                if self.policy.unknown_categories == "reject":
                    shown = _preview(feature.categories)
                    verdicts.flag_each(
                        strange,
                        lambda row: (
                            f"feature {name!r} has an unknown category: {texts[row]!r} "
                            f"(known: {shown})"
                        ),
                    )
                else:
                    unknown[name] = strange
        texts[missing | nested] = np.nan
        return texts

    def _missing_reason(self, name: str) -> str:
        if self.policy.missing_values == "reject":
            return f"feature {name!r} is missing, and missing values are refused for this model"
        return f"feature {name!r} is missing, and this model cannot fill it in"


def refusal_reason(error: BaseException) -> str:
    """The reason for a row the checker let through and the model itself refused (a scaler
    that turns 1e36 into infinity before a float32 forest), worded alike in every door."""
    lines = str(error).strip().splitlines()
    return f"the model refused it: {type(error).__name__}: {lines[0] if lines else ''}".rstrip()


def rejection_text(rejections: Sequence[tuple[int, str]]) -> str:
    """How every door words a refused request: the first rejected row, by its position, with its
    reason, and how many other rows were rejected (``rejections`` in row order, not empty)."""
    row, reason = rejections[0]
    more = len(rejections) - 1
    suffix = f" ({more} more row{'s' if more > 1 else ''} rejected)" if more else ""
    return f"row {row}: {reason}{suffix}"


def _extra_reason(columns: Sequence[str]) -> str:
    return f"unknown column(s) {_names(columns)}, and extra columns are refused for this model"


def _names(columns: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(c) for c in list(columns)[:limit])
    return f"{shown} and {len(columns) - limit} more" if len(columns) > limit else shown


def _check_length(feature: Feature, values: np.ndarray, rows: int) -> None:
    if len(values) != rows:
        raise InvalidInput(
            f"feature {feature.name!r} has {len(values)} values for {rows} rows; "
            "every column must have one value per row"
        )


def _nulls(rows: int) -> pa.Array:
    return pa.nulls(rows)


def _binary_mask(numbers: np.ndarray) -> np.ndarray:
    mask: np.ndarray = (numbers == 0.0) | (numbers == 1.0)
    return mask


def _is_binary(column: np.ndarray) -> bool:
    return bool(_binary_mask(column).all())


def _preview(categories: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(categories[:limit])
    return f"{shown}, …" if len(categories) > limit else shown


__all__ = [
    "CheckedRows",
    "ExtraColumns",
    "InputPolicy",
    "MissingValues",
    "ModelLimits",
    "RowChecker",
    "UnknownCategories",
    "refusal_reason",
    "rejection_text",
]
