"""What a running server's /metrics says about each model version it serves, for `mlserve status`.

Counters and histograms in the exposition are totals since the server started; a rate needs
two scrapes, so ``requests_per_second`` takes the scrape before and after a short wait.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

PREDICTION_FEATURE = "__prediction__"
"""The drift gauges' feature label for the prediction distribution."""

Key = tuple[str, str]
"""(model, version)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One line of the exposition: a sample name (with its _total/_bucket suffix), labels, value."""

    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class Scrape:
    """Every sample of one /metrics answer, and when it was taken (monotonic seconds)."""

    samples: list[Sample]
    taken_at_s: float

    @classmethod
    def parse(cls, text: str, taken_at_s: float) -> Scrape:
        """Parse the Prometheus text format; raises ValueError on a malformed exposition."""
        samples = [
            Sample(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
        return cls(samples, taken_at_s)

    def by_version(self, name: str) -> dict[Key, list[Sample]]:
        """Samples of ``name`` grouped by their (model, version) labels."""
        grouped: dict[Key, list[Sample]] = defaultdict(list)
        for sample in self.samples:
            if sample.name == name and sample.labels.get("model"):
                grouped[(sample.labels["model"], sample.labels.get("version", ""))].append(sample)
        return grouped

    def totals(self, name: str) -> dict[Key, float]:
        """The sum of ``name``'s samples per (model, version)."""
        return {key: sum(s.value for s in found) for key, found in self.by_version(name).items()}


@dataclass(frozen=True, slots=True)
class VersionStatus:
    """What the server reports about one model version. None: the server has no such value
    (no drift check yet, no feedback, no requests)."""

    model: str
    version: str
    ready: bool | None
    requests: float
    errors: float
    p95_s: float | None
    drift_share: float | None
    """Share of features drifted in the last check; None before a check that tested any."""
    drifted: tuple[str, ...]
    """Features the last drift check found drifted; "prediction" (first) for the predictions."""
    drift_window_rows: float | None
    """Logged rows the last drift check looked at (too few: nothing was tested)."""
    accuracy: float | None
    mae: float | None
    labelled_rows: float | None

    @property
    def error_rate(self) -> float | None:
        """Errors over requests since the server started; None before any request."""
        return self.errors / self.requests if self.requests else None


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated as Prometheus does.

    ``buckets`` holds (upper bound, cumulative count) pairs, +Inf included. None when empty.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank:
            if math.isinf(upper):
                return lower  # beyond the largest finite bound: that bound is all we know
            # count > below here: the previous bucket held fewer than rank observations.
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def version_statuses(scrape: Scrape) -> list[VersionStatus]:
    """One status per model version the server serves (or answered requests for), sorted."""
    ready = {
        k: min(s.value for s in v) for k, v in scrape.by_version("mlserve_model_ready").items()
    }
    requests = scrape.totals("mlserve_requests_total")
    errors = scrape.totals("mlserve_request_errors_total")
    keys = sorted(set(ready) | {k for k, n in requests.items() if n})
    buckets = _buckets(scrape)
    # A check with too few logged rows publishes a share of 0 but no statistics: not a result.
    tested = set(scrape.by_version("mlserve_drift_statistic"))
    drift_share = {k: v for k, v in _latest(scrape, "mlserve_drift_share").items() if k in tested}
    drift_rows = _latest(scrape, "mlserve_drift_window_rows")
    accuracy = _latest(scrape, "mlserve_online_accuracy")
    mae = _latest(scrape, "mlserve_online_mae")
    labelled = _latest(scrape, "mlserve_online_labelled_rows")
    drifted = _drifted_features(scrape)
    return [
        VersionStatus(
            model=key[0],
            version=key[1],
            ready=(ready[key] >= 1) if key in ready else None,
            requests=requests.get(key, 0.0),
            errors=errors.get(key, 0.0),
            p95_s=histogram_quantile(0.95, buckets[key].items()) if key in buckets else None,
            drift_share=drift_share.get(key),
            drifted=drifted.get(key, ()),
            drift_window_rows=drift_rows.get(key),
            accuracy=accuracy.get(key),
            mae=mae.get(key),
            labelled_rows=labelled.get(key),
        )
        for key in keys
    ]


def requests_per_second(before: Scrape, after: Scrape) -> dict[Key, float]:
    """Requests answered per second between two scrapes, per (model, version)."""
    elapsed_s = after.taken_at_s - before.taken_at_s
    if elapsed_s <= 0:
        return {}
    start = before.totals("mlserve_requests_total")
    return {
        key: max(0.0, total - start.get(key, 0.0)) / elapsed_s
        for key, total in after.totals("mlserve_requests_total").items()
    }


def _buckets(scrape: Scrape) -> dict[Key, dict[float, float]]:
    """Latency buckets per version, summed over protocols: upper bound -> cumulative count."""
    summed: dict[Key, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for key, found in scrape.by_version("mlserve_request_duration_seconds_bucket").items():
        for sample in found:
            summed[key][float(sample.labels["le"])] += sample.value
    return summed


def _latest(scrape: Scrape, name: str) -> dict[Key, float]:
    """A per-version gauge; NaN (nothing computed yet) counts as missing."""
    return {
        key: found[0].value
        for key, found in scrape.by_version(name).items()
        if not math.isnan(found[0].value)
    }


def _drifted_features(scrape: Scrape) -> dict[Key, tuple[str, ...]]:
    """Features whose drift gauge says drifted, per version; the predictions first."""
    drifted: dict[Key, list[str]] = defaultdict(list)
    for key, found in scrape.by_version("mlserve_drift_detected").items():
        names = sorted(s.labels.get("feature", "?") for s in found if s.value >= 1)
        if PREDICTION_FEATURE in names:
            names = ["prediction", *(n for n in names if n != PREDICTION_FEATURE)]
        drifted[key] = names
    return {key: tuple(names) for key, names in drifted.items()}
