"""Check a dataset before training and report every problem at once."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from mlserve.types import Task

Severity = Literal["error", "warning"]

MIN_ROWS = 10
"""Fewest usable rows a model is trained on."""
MIN_CLASS_ROWS = 2
"""Fewest rows per class: a stratified split needs one on each side."""
MAX_CLASSES_FOR_INTEGER_TARGET = 20
IDENTIFIER_NAME = re.compile(r"(?i:(^|[_\-\s])(id|uuid|guid|key)$|^id[_\-\s])|[a-z](Id|ID)$")
"""Column names that say "identifier": id, customer_id, user-uuid, id_customer, customerId."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: errors stop training, warnings describe what will be dropped or changed."""

    severity: Severity
    code: str
    message: str


@dataclass(slots=True)
class ValidationReport:
    """Every finding about a dataset, and the columns and rows that cleaning removes."""

    task: Task | None = None
    problems: list[Problem] = field(default_factory=list)
    drop_columns: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        """Findings that stop training."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        """Findings that training works around."""
        return [p for p in self.problems if p.severity == "warning"]

    def add(self, severity: Severity, code: str, message: str) -> None:
        """Record a finding."""
        self.problems.append(Problem(severity, code, message))


def infer_task(target: pd.Series) -> Task:
    """Classification for text, boolean or few-valued integer targets, regression otherwise."""
    values = target.dropna()
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "classification"
    with np.errstate(invalid="ignore"):  # inf mod 1 is NaN: not a whole number, no warning
        whole = pd.api.types.is_integer_dtype(values) or bool(
            np.all(np.mod(values.to_numpy(dtype=float), 1) == 0)
        )
    few = values.nunique() <= MAX_CLASSES_FOR_INTEGER_TARGET
    return "classification" if whole and few else "regression"


def validate_dataset(
    frame: pd.DataFrame, target: str, task: Task | None = None
) -> ValidationReport:
    """Inspect ``frame`` for training on ``target``; never raises, returns every finding."""
    report = ValidationReport()
    if frame.empty or len(frame.columns) == 0:
        report.add("error", "empty", "the dataset has no rows")
        return report
    if target not in frame.columns:
        columns = ", ".join(map(str, frame.columns[:10]))
        report.add(
            "error", "missing_target", f"target column {target!r} not found (columns: {columns})"
        )
        return report
    y = frame[target]
    missing_target = int(y.isna().sum())
    if missing_target == len(frame):
        report.add("error", "target_all_null", f"target column {target!r} has no values")
        return report
    if missing_target:
        report.add(
            "warning", "rows_without_target", f"{missing_target} row(s) have no {target!r}; dropped"
        )
    labelled = frame[y.notna()]
    report.task = task or infer_task(labelled[target])
    if report.task == "regression" and _as_float(labelled[target]) is None:
        report.add(
            "error",
            "target_not_numeric",
            f"target column {target!r} is not numeric; regression needs numbers",
        )

    duplicates = int(labelled.duplicated().sum())
    if duplicates:
        report.add("warning", "duplicate_rows", f"{duplicates} duplicate row(s); dropped")
    features = labelled.drop(columns=[target])
    if features.shape[1] == 0:
        report.add("error", "no_features", "the dataset has no feature columns besides the target")
    for column in features.columns:
        if features[column].nunique(dropna=True) <= 1:
            report.drop_columns.append(str(column))
            report.add("warning", "constant_column", f"column {column!r} is constant; dropped")
    _check_leakage(features, labelled[target], report)
    _check_identifiers(features, report)
    usable = len(labelled.drop_duplicates())
    if usable < MIN_ROWS:
        report.add(
            "error", "too_few_rows", f"only {usable} usable row(s); at least {MIN_ROWS} needed"
        )
    if report.task == "classification":
        _check_classes(labelled[target], report)
    return report


def clean_dataset(frame: pd.DataFrame, target: str, report: ValidationReport) -> pd.DataFrame:
    """Apply the report: drop unlabelled and duplicate rows and constant columns."""
    cleaned = frame[frame[target].notna()].drop_duplicates()
    return cleaned.drop(columns=report.drop_columns).reset_index(drop=True)


def _check_classes(y: pd.Series, report: ValidationReport) -> None:
    counts = y.value_counts()
    if len(counts) < 2:
        report.add(
            "error", "single_class", f"the target has one class ({counts.index[0]!r}); need two"
        )
    rare = counts[counts < MIN_CLASS_ROWS]
    if len(rare):
        listed = ", ".join(f"{k!r} ({v} row)" for k, v in rare.items())
        report.add(
            "error",
            "rare_classes",
            f"class(es) with fewer than {MIN_CLASS_ROWS} rows: {listed}; remove them or add data",
        )


def _check_leakage(features: pd.DataFrame, y: pd.Series, report: ValidationReport) -> None:
    """Flag columns that are the target in disguise: equal to it, or a relabelling of it."""
    target_codes = pd.factorize(y)[0]
    y_float = _as_float(y) if report.task == "regression" else None
    for column in features.columns:
        x = features[column]
        if x.isna().any() or str(column) in report.drop_columns:
            continue
        same = x.astype(str).to_numpy() == y.astype(str).to_numpy()
        relabelled = _is_one_to_one(pd.factorize(x)[0], target_codes)
        correlated = (
            y_float is not None
            and pd.api.types.is_numeric_dtype(x)
            and _collinear(x.to_numpy(dtype=float), y_float)
        )
        if same.all() or (report.task == "classification" and relabelled) or correlated:
            report.add(
                "error",
                "leakage",
                f"column {column!r} is identical to the target (leakage); drop it with --drop {column}",
            )


def _check_identifiers(features: pd.DataFrame, report: ValidationReport) -> None:
    """Warn about columns that look like row identifiers: a model learns nothing that carries
    over from them (or worse, something that does not), so they are most likely a mistake.

    A column looks like one when every row has its own value and it is text, or whole numbers
    that are consecutive or named like an identifier. Unique real numbers are measurements.
    """
    rows = len(features)
    if rows < MIN_ROWS:
        return
    for column in features.columns:
        name = str(column)
        values = features[column]
        if name in report.drop_columns or values.isna().any() or values.nunique() != rows:
            continue
        numbers = _as_float(values)
        if numbers is None:
            looks_like_id = True
        elif np.all(np.mod(numbers, 1) == 0):
            consecutive = numbers.max() - numbers.min() + 1 == rows
            looks_like_id = consecutive or bool(IDENTIFIER_NAME.search(name))
        else:
            looks_like_id = False
        if looks_like_id:
            report.add(
                "warning",
                "identifier_column",
                f"column {name!r} looks like an identifier (every row has its own value) and is "
                f"used as a feature; if it is one, leave it out with --drop {name}",
            )


def _is_one_to_one(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = len(set(zip(a.tolist(), b.tolist(), strict=True)))
    return pairs == len(set(a.tolist())) == len(set(b.tolist()))


def _as_float(values: pd.Series) -> np.ndarray | None:
    """The values as floats, or None when some are not numbers."""
    try:
        return values.to_numpy(dtype=float)
    except (TypeError, ValueError):
        return None


def _collinear(x: np.ndarray, y: np.ndarray) -> bool:
    """True when x is (almost exactly) a linear function of y: a regression target in disguise."""
    with np.errstate(all="ignore"):  # huge or constant values: no correlation, not a warning
        if not (np.isfinite(x).all() and np.isfinite(y).all()) or x.std() == 0 or y.std() == 0:
            return False
        r = float(np.corrcoef(x, y)[0, 1])
    return bool(np.isfinite(r)) and abs(r) > 0.9999
