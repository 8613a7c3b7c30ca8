"""The request metrics every protocol updates: answered requests, errors and latency by model,
version, protocol and status, and requests in flight by protocol.

Statuses are HTTP status codes for every protocol: a gRPC call is counted under the status its
error would get over REST (200 for OK), so one error-rate query covers both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlserve.monitoring.metrics import ServingMetrics

PROTOCOLS = ("v2", "v1", "mlflow", "grpc", "other")
"""Values of the ``protocol`` label."""


@dataclass(frozen=True, slots=True)
class _Children:
    """The labelled instruments one (model, version, protocol, status) updates."""

    requests: Any
    errors: Any | None
    latency: Any

    @classmethod
    def of(cls, metrics: ServingMetrics, key: tuple[str, str, str, str]) -> _Children:
        model, version, protocol, status = key
        return cls(
            requests=metrics.requests.labels(*key),
            errors=metrics.errors.labels(*key) if int(status) >= 400 else None,
            latency=metrics.latency.labels(model, version, protocol),
        )


class RequestMetrics:
    """Counts answered requests; event-loop only (not thread safe)."""

    def __init__(self, metrics: ServingMetrics) -> None:
        self._metrics = metrics
        # Metric children by label values: .labels() takes a lock and builds a key each call.
        self._children: dict[tuple[str, str, str, str], _Children] = {}
        self.in_flight = {p: metrics.in_flight.labels(p) for p in PROTOCOLS}
        """The in-flight gauge of each protocol."""

    def observe(
        self, model: str, version: str, protocol: str, status: int, elapsed_s: float
    ) -> None:
        """Count one answered request; its latency only when it named a model."""
        key = (model, version, protocol, str(status))
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = _Children.of(self._metrics, key)
        children.requests.inc()
        if children.errors is not None:
            children.errors.inc()
        if model:
            children.latency.observe(elapsed_s)
