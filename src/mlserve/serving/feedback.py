"""Feedback requests and the online scores they feed: parsing, label checks, gauges."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from mlserve.errors import InvalidInput
from mlserve.monitoring.feedback import (
    FeedbackItem,
    FeedbackResult,
    OnlineMetrics,
    Task,
    class_key,
    is_number,
)
from mlserve.monitoring.metrics import MonitoringMetrics
from mlserve.monitoring.predlog import PredictionLogStore, PredictionLogWriter
from mlserve.serving.models import ModelManager
from mlserve.serving.protocol import parse_json
from mlserve.serving.served import ServedVersion

log = logging.getLogger(__name__)

MAX_ITEMS = 100_000
"""Most labels in one feedback call."""
MAX_ID_CHARS = 128
"""Request ids longer than this are never logged (the middleware truncates them)."""
ONLINE_REFRESH_S = 60.0
"""How often the server recomputes online scores from the shared database."""
FLUSH_TIMEOUT_S = 10.0
"""How long a feedback call waits for this process's queued predictions to be written."""
UNKNOWN_RETRY_S = 1.5
"""With several worker processes: for how long unknown ids are looked up again (another
worker may not have written them yet); truly unknown ids delay the answer this long."""


def parse_feedback(raw: bytes) -> list[FeedbackItem]:
    """Labels from ``{"feedback": [{"request_id", "label", "row"?}, ...]}`` or the compact
    ``{"request_ids": [...], "labels": [...], "rows"?: [...]}``.

    Raises InvalidInput naming the field at fault.
    """
    payload = parse_json(raw)
    if not isinstance(payload, dict):
        raise InvalidInput('the body must be a JSON object with "feedback": [...]')
    if "feedback" in payload:
        entries = payload["feedback"]
        if not isinstance(entries, list) or not entries:
            raise InvalidInput("feedback: must be a non-empty list of objects")
        _check_count(len(entries), "feedback")
        items = []
        for index, entry in enumerate(entries):
            where = f"feedback[{index}]"
            if not isinstance(entry, dict):
                raise InvalidInput(f"{where}: must be an object with request_id and label")
            if "label" not in entry:
                raise InvalidInput(f"{where}.label: is missing")
            items.append(
                _item(entry.get("request_id"), entry["label"], entry.get("row", 0), where, ".")
            )
        return items
    if "request_ids" in payload:
        ids, labels = payload["request_ids"], payload.get("labels")
        if not isinstance(ids, list) or not ids:
            raise InvalidInput("request_ids: must be a non-empty list of request ids")
        _check_count(len(ids), "request_ids")
        if not isinstance(labels, list) or len(labels) != len(ids):
            raise InvalidInput("labels: must be a list with one label per request id")
        rows = payload.get("rows", [0] * len(ids))
        if not isinstance(rows, list) or len(rows) != len(ids):
            raise InvalidInput("rows: must be a list with one row index per request id")
        return [
            _item(rid, label, row, "", f"[{i}]")
            for i, (rid, label, row) in enumerate(zip(ids, labels, rows, strict=True))
        ]
    raise InvalidInput('the body must hold "feedback": [...] or "request_ids" and "labels"')


def _check_count(count: int, field: str) -> None:
    if count > MAX_ITEMS:
        raise InvalidInput(f"{field}: at most {MAX_ITEMS} labels per call")


def _item(request_id: Any, label: Any, row: Any, prefix: str, index: str) -> FeedbackItem:
    """One validated item; field names read like feedback[3].label or labels[3]."""

    def name(field: str) -> str:
        plural = {"request_id": "request_ids", "label": "labels", "row": "rows"}[field]
        return f"{prefix}.{field}" if prefix else f"{plural}{index}"

    if not isinstance(request_id, str) or not request_id:
        raise InvalidInput(f"{name('request_id')}: must be a non-empty string")
    if len(request_id) > MAX_ID_CHARS:
        raise InvalidInput(f"{name('request_id')}: longer than {MAX_ID_CHARS} characters")
    if label is None or isinstance(label, list | dict):
        raise InvalidInput(f"{name('label')}: must be a class label or a number")
    if isinstance(row, bool) or not isinstance(row, int) or row < 0:
        raise InvalidInput(f"{name('row')}: must be a row index (0 or more)")
    return FeedbackItem(request_id=request_id, label=label, row=row)


def check_labels(versions: Sequence[ServedVersion], items: Sequence[FeedbackItem]) -> None:
    """Refuse labels the model cannot have: unknown classes for classifiers, non-numbers for
    regressors. Judged by the loaded versions when they agree on a task (and, for classifiers,
    know their classes: an MLflow pyfunc's signature may say labels without listing them); else
    not at all."""
    tasks = {task_of(m) for m in versions}
    allowed = {class_key(c) for m in versions for c in m.class_labels}
    if tasks == {"classification"} and allowed:
        for index, item in enumerate(items):
            if class_key(item.label) not in allowed:
                shown = ", ".join(sorted(allowed)[:10])
                raise InvalidInput(
                    f"label of item {index}: {item.label!r} is not a class of this model "
                    f"(classes: {shown})"
                )
    elif tasks == {"regression"}:
        for index, item in enumerate(items):
            if not is_number(item.label):
                raise InvalidInput(
                    f"label of item {index}: {item.label!r} is not a number, and this model "
                    "is a regressor"
                )


def task_of(model: ServedVersion) -> Task:
    """A served version's task, from its signature (or its classes when that says nothing)."""
    task = model.runtime.signature.task
    if task in ("classification", "regression"):
        return task
    return "classification" if model.class_labels else "regression"


class OnlineScores:
    """Joins feedback and keeps the online accuracy, F1 and MAE gauges of every served model.

    The database work runs in worker threads; the gauges are recomputed after each feedback
    call and every ``interval_s`` (other worker processes receive feedback too). With several
    worker processes, pass ``retry_unknown_s``: unknown ids are looked up again for that long.
    ``accuracy_floor`` gives a model's configured floor, published beside its scores.
    """

    def __init__(
        self,
        store: PredictionLogStore,
        writer: PredictionLogWriter | None,
        models: ModelManager,
        metrics: MonitoringMetrics,
        window_s: float,
        retry_unknown_s: float = 0.0,
        accuracy_floor: Callable[[str], float | None] = lambda _name: None,
    ) -> None:
        self._retry_unknown_s = retry_unknown_s
        self._accuracy_floor = accuracy_floor
        self._store = store
        self._writer = writer
        self._models = models
        self._metrics = metrics
        self.window_s = window_s

    async def add_feedback(self, name: str, items: list[FeedbackItem]) -> FeedbackResult:
        """Join ``items`` to model ``name``'s logged predictions and refresh its scores.

        Predictions this process has queued are written first, so a request answered a moment
        ago is found.
        """
        if self._writer is not None:
            await asyncio.to_thread(self._writer.flush, FLUSH_TIMEOUT_S)
        result = await asyncio.to_thread(self._store.add_feedback, name, items)
        delay_s, waited_s = 0.1, 0.0
        while result.unmatched and waited_s < self._retry_unknown_s:
            # Another worker process may have answered these a moment ago and not written
            # them yet (its writer lingers ~0.2 s): look again, a few times.
            await asyncio.sleep(delay_s)
            waited_s += delay_s
            delay_s *= 2
            retry = await asyncio.to_thread(self._store.add_feedback, name, result.unmatched)
            result = result.then(retry)
        for version, count in result.joined_by_version.items():
            self._metrics.feedback.labels(name, version).inc(count)
        if result.unmatched:
            self._metrics.feedback_unknown.labels(name).inc(len(result.unmatched))
        log.info(
            "feedback joined",
            extra={"model": name, "joined": result.joined, "unknown": len(result.unknown)},
        )
        await self.refresh(name)
        return result

    def logged_rows(self, name: str) -> int:
        """Rows of model ``name`` in the prediction log (blocking: call in a thread)."""
        return self._store.count(name)

    async def refresh(self, name: str) -> dict[str, OnlineMetrics]:
        """Recompute model ``name``'s scores per version, set the gauges, and return them.

        Served versions without labels are included, with no scores.
        """
        served = [m for m in self._models.served() if m.name == name]
        tasks = {m.version: task_of(m) for m in served}
        since = datetime.now(UTC) - timedelta(seconds=self.window_s)
        scores = await asyncio.to_thread(self._store.online_metrics, name, since, tasks)
        for version, task in tasks.items():
            scores.setdefault(version, OnlineMetrics(labelled_rows=0, task=task))
        for version, metrics in scores.items():
            self._publish(name, version, metrics)
        floor = self._accuracy_floor(name)
        if floor is not None:
            self._metrics.online_accuracy_floor.labels(name).set(floor)
        return dict(sorted(scores.items(), key=lambda kv: (len(kv[0]), kv[0])))

    def _publish(self, name: str, version: str, scores: OnlineMetrics) -> None:
        labels = (name, version)
        self._metrics.online_labelled_rows.labels(*labels).set(scores.labelled_rows)
        for gauge, value in (
            (self._metrics.online_accuracy, scores.accuracy),
            (self._metrics.online_f1, scores.f1),
            (self._metrics.online_mae, scores.mae),
        ):
            if value is not None:
                gauge.labels(*labels).set(value)

    async def run(self, interval_s: float, first_after_s: float = 2.0) -> None:
        """Refresh every served model's scores forever, the first time soon after start (a
        restarted server reports the labels it already has); failures are logged, never raised.
        """
        await asyncio.sleep(min(first_after_s, interval_s))
        while True:
            for name in sorted({m.name for m in self._models.served()}):
                try:
                    await self.refresh(name)
                except Exception:  # a failing database must not stop the next refresh
                    log.warning(
                        "online scores refresh failed", extra={"model": name}, exc_info=True
                    )
            await asyncio.sleep(interval_s)
