"""Prometheus instruments of batch jobs, built on a registry the caller passes in.

A job reports every chunk as it finishes (chunks finished before a resume are reported when the
job resumes), so at the end the counters hold the same totals as the job's JSON summary. A
batch job is short-lived: write the registry to a file for node_exporter's textfile collector
or push it to a Pushgateway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

_LABELS = ("model", "version")


@dataclass(frozen=True, slots=True)
class BatchMetrics:
    """Rows read, scored and rejected, chunks done, and how long and how fast the job ran."""

    rows_read: Counter
    rows_scored: Counter
    rows_rejected: Counter
    chunks: Counter
    duration_seconds: Gauge
    rows_per_second: Gauge
    last_success: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> BatchMetrics:
        """Register the instruments on ``registry`` (tests use a fresh one each)."""
        return cls(
            rows_read=Counter(
                "mlserve_batch_rows_read",
                "Input records read by batch jobs (scored plus rejected).",
                _LABELS,
                registry=registry,
            ),
            rows_scored=Counter(
                "mlserve_batch_rows_scored",
                "Input records that got a prediction.",
                _LABELS,
                registry=registry,
            ),
            rows_rejected=Counter(
                "mlserve_batch_rows_rejected",
                "Input records written to the rejects file instead of the output.",
                _LABELS,
                registry=registry,
            ),
            chunks=Counter(
                "mlserve_batch_chunks",
                "Chunks finished and checkpointed.",
                _LABELS,
                registry=registry,
            ),
            duration_seconds=Gauge(
                "mlserve_batch_duration_seconds",
                "Wall time of the last run of the job (this process only).",
                _LABELS,
                registry=registry,
            ),
            rows_per_second=Gauge(
                "mlserve_batch_rows_per_second",
                "Records processed per second by the last run of the job.",
                _LABELS,
                registry=registry,
            ),
            last_success=Gauge(
                "mlserve_batch_last_success_timestamp_seconds",
                "Unix time the job last finished with its output written.",
                _LABELS,
                registry=registry,
            ),
        )

    def record_chunk(
        self, model: str, version: int, *, records: int, scored: int, rejected: int
    ) -> None:
        """Count one finished chunk."""
        labels = (model, str(version))
        self.rows_read.labels(*labels).inc(records)
        self.rows_scored.labels(*labels).inc(scored)
        self.rows_rejected.labels(*labels).inc(rejected)
        self.chunks.labels(*labels).inc()

    def record_run(
        self, model: str, version: int, *, seconds: float, rows_per_second: float, succeeded: bool
    ) -> None:
        """Record the end of a run; ``succeeded`` when the output was written."""
        labels = (model, str(version))
        self.duration_seconds.labels(*labels).set(seconds)
        self.rows_per_second.labels(*labels).set(rows_per_second)
        if succeeded:
            self.last_success.labels(*labels).set(time.time())
