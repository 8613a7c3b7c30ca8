"""Drift checks in the server: on a schedule and on demand, published as Prometheus gauges."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Gauge

from mlserve.errors import NotFound
from mlserve.monitoring.drift import (
    PREDICTION,
    WINDOW_ROW_LIMIT,
    DriftCheck,
    DriftConfig,
    DriftReport,
    Reference,
    detect_drift,
    prediction_kind,
)
from mlserve.monitoring.metrics import MonitoringMetrics
from mlserve.monitoring.predlog import PredictionLogStore, PredictionLogWriter
from mlserve.serving.executor import InferenceExecutor
from mlserve.serving.models import ModelManager
from mlserve.serving.served import ServedVersion

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 10.0
"""How long an on-demand check waits for this process's queued predictions to be written."""


@dataclass(frozen=True, slots=True)
class DriftSchedule:
    """When and over what the server checks: every ``interval_s`` (0 = never), ``window_s`` back."""

    interval_s: float
    window_s: float
    config: DriftConfig


class DriftMonitor:
    """Compares each served version's recent inputs and predictions with its reference.

    Reading the log and the statistics run in worker threads (``asyncio.to_thread``), the
    reference predictions on the inference executor, once per loaded version. Checks run one
    at a time, so a scheduled and an on-demand check never compete for the cores.
    """

    def __init__(
        self,
        store: PredictionLogStore,
        models: ModelManager,
        executor: InferenceExecutor,
        metrics: MonitoringMetrics,
        schedule: DriftSchedule,
        writer: PredictionLogWriter | None = None,
    ) -> None:
        self._store = store
        self._models = models
        self._executor = executor
        self._metrics = metrics
        self._writer = writer
        self.schedule = schedule
        self._references: dict[tuple[str, str], Reference | None] = {}
        self._lock: asyncio.Lock | None = None

    async def check(
        self, name: str, version: str | None = None, window_s: float | None = None
    ) -> DriftReport:
        """Check a served version now (its default version when ``version`` is None).

        Predictions this process has queued are written first. Raises ModelNotFound,
        VersionNotFound, NotReady, or NotFound when the version has no reference profile.
        """
        model = self._models.get(name, version)
        if self._writer is not None:
            await asyncio.to_thread(self._writer.flush, FLUSH_TIMEOUT_S)
        return await self._check(model, window_s or self.schedule.window_s)

    async def run(self) -> None:
        """Check every ready version each interval, forever; failures are logged, not raised."""
        while True:
            await asyncio.sleep(self.schedule.interval_s)
            for model in self._models.served():
                try:
                    await self._check(model, self.schedule.window_s)
                except NotFound:  # no reference profile: nothing to compare with
                    continue
                except Exception:  # a failing database must not stop the next check
                    log.warning(
                        "drift check failed",
                        extra={"model": model.name, "version": model.version},
                        exc_info=True,
                    )

    async def _check(self, model: ServedVersion, window_s: float) -> DriftReport:
        if self._lock is None:  # made on the loop that uses it, never at import or build time
            self._lock = asyncio.Lock()
        async with self._lock:
            reference = await self._reference(model)
            until = datetime.now(UTC)
            since = until - timedelta(seconds=window_s)
            report = await asyncio.to_thread(self._compute, model, reference, since, until)
        self._publish(report, reference)
        log.info(
            "drift checked",
            extra={
                "model": report.model,
                "version": report.version,
                "status": report.status,
                "window_rows": report.window_rows,
                "drifted": [f.name for f in report.features if f.drifted],
            },
        )
        return report

    def _compute(
        self, model: ServedVersion, reference: Reference, since: datetime, until: datetime
    ) -> DriftReport:
        """In a worker thread: read the window and run the tests."""
        window = self._store.read_window(
            model.name, model.version, since, until, limit=WINDOW_ROW_LIMIT
        )
        check = DriftCheck(
            model=model.name,
            version=model.version,
            reference=reference,
            inputs=window.inputs,
            predictions=window.predictions,
            since=since,
            until=until,
        )
        return detect_drift(check, self.schedule.config)

    async def _reference(self, model: ServedVersion) -> Reference:
        """The version's reference with the model's predictions on its sample, made once."""
        key = (model.name, model.version)
        if key not in self._references:
            profile = model.reference_profile
            self._references[key] = (
                None if profile is None else await self._with_predictions(model, profile)
            )
        reference = self._references[key]
        if reference is None:
            raise NotFound(
                f"model {model.name!r} version {model.version} has no reference profile to "
                "compare with (train it with mlserve train, or register it with --signature-from)"
            )
        return reference

    async def _with_predictions(self, model: ServedVersion, profile: dict[str, Any]) -> Reference:
        reference = Reference.from_profile(profile)
        runtime = model.runtime
        batch = reference.batch_for(runtime.signature)
        if batch is None:
            return reference
        try:
            predictions = await self._executor.run(runtime.predict, batch)
        except Exception:  # drift of the inputs is still worth checking without predictions
            log.warning(
                "reference predictions failed",
                extra={"model": model.name, "version": model.version},
                exc_info=True,
            )
            return reference
        return reference.with_predictions(predictions, prediction_kind(runtime.signature))

    def _publish(self, report: DriftReport, reference: Reference) -> None:
        """Set the gauges; untested features read not-drifted and lose stale statistics."""
        m, labels = self._metrics, (report.model, report.version)
        results = {f.name: f for f in report.features}
        names = [*reference.kinds, *([PREDICTION] if reference.predictions is not None else [])]
        for name in names:
            feature = results.get(name)
            series = (*labels, name)
            m.drift_detected.labels(*series).set(
                1 if feature is not None and feature.drifted else 0
            )
            if feature is not None and feature.statistic is not None:
                m.drift_statistic.labels(*series).set(feature.statistic)
                m.drift_p_value.labels(*series).set(feature.corrected_p_value or 0.0)
            else:
                _forget(m.drift_statistic, series)
                _forget(m.drift_p_value, series)
        m.drift_share.labels(*labels).set(report.share_drifted)
        m.drift_window_rows.labels(*labels).set(report.window_rows)
        m.drift_last_run.labels(*labels).set(time.time())


def _forget(gauge: Gauge, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):  # never set: nothing to remove
        gauge.remove(*labels)
