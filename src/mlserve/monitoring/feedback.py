"""Ground truth for logged predictions, and the online scores computed from it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Task = Literal["classification", "regression"]


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """The true label of row ``row`` of the request ``request_id`` (rows count from 0)."""

    request_id: str
    label: Any
    row: int = 0


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    """What joining a call's feedback found: matches per version, and the ids that matched none."""

    joined_by_version: dict[str, int] = field(default_factory=dict)
    unmatched: list[FeedbackItem] = field(default_factory=list)
    """Items with no logged prediction for their request id and row (not stored)."""

    @property
    def joined(self) -> int:
        """Labels that matched a logged prediction."""
        return sum(self.joined_by_version.values())

    @property
    def unknown(self) -> list[str]:
        """Request ids of the unmatched items, in the order given, each once."""
        return list(dict.fromkeys(item.request_id for item in self.unmatched))

    def then(self, retry: FeedbackResult) -> FeedbackResult:
        """This result after the unmatched items were tried again with ``retry``'s outcome."""
        joined = dict(self.joined_by_version)
        for version, count in retry.joined_by_version.items():
            joined[version] = joined.get(version, 0) + count
        return FeedbackResult(joined_by_version=joined, unmatched=retry.unmatched)


@dataclass(frozen=True, slots=True)
class OnlineMetrics:
    """Scores of one version's labelled predictions; the ones not of its task are None."""

    labelled_rows: int
    task: Task
    accuracy: float | None = None
    f1: float | None = None
    """Macro-averaged F1 over the classes seen in labels or predictions."""
    mae: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "labelled_rows": self.labelled_rows,
            "task": self.task,
            "accuracy": self.accuracy,
            "f1": self.f1,
            "mae": self.mae,
        }


def class_key(value: Any) -> str:
    """How a class label compares: as text, with whole floats as integers (1.0 and "1" match 1)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def is_number(value: Any) -> bool:
    """True for finite ints and floats (not booleans): what a regressor's label must be."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def guess_task(predictions: Sequence[Any]) -> Task:
    """Classification when any prediction is text or a boolean, regression otherwise.

    Only for versions whose signature is no longer at hand; the server passes the real task.
    """
    if any(isinstance(p, str | bool) for p in predictions):
        return "classification"
    return "regression"


def score(task: Task, predictions: Sequence[Any], labels: Sequence[Any]) -> OnlineMetrics:
    """Accuracy and macro F1 (classification) or MAE (regression) of predictions against labels.

    Rows whose prediction or label is not a number are left out of a regression's MAE but still
    counted as labelled.
    """
    # Imported here: scikit-learn takes a second to import, and only scoring needs it (not
    # `mlserve log export`, nor a batch worker importing the monitoring package).
    from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error

    rows = len(labels)
    if rows == 0:
        return OnlineMetrics(labelled_rows=0, task=task)
    if task == "classification":
        truth = [class_key(v) for v in labels]
        predicted = [class_key(v) for v in predictions]
        return OnlineMetrics(
            labelled_rows=rows,
            task=task,
            accuracy=float(accuracy_score(truth, predicted)),
            f1=float(f1_score(truth, predicted, average="macro", zero_division=0)),
        )
    pairs = [
        (float(p), float(t))
        for p, t in zip(predictions, labels, strict=True)
        if is_number(p) and is_number(t)
    ]
    mae = (
        float(mean_absolute_error([t for _, t in pairs], [p for p, _ in pairs])) if pairs else None
    )
    return OnlineMetrics(labelled_rows=rows, task=task, mae=mae)
