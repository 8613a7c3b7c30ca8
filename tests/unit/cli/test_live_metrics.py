"""Reading a server's /metrics for `mlserve status`: quantiles, per-version values, rates."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mlserve.cli.live_metrics import (
    Scrape,
    histogram_quantile,
    requests_per_second,
    version_statuses,
)
from mlserve.monitoring.metrics import MonitoringMetrics, ServingMetrics


def test_quantile_interpolates_inside_a_bucket_as_prometheus_does() -> None:
    # The same buckets as the p95 alert's unit test, where promtool reports 241.7ms.
    buckets = [(0.01, 0.0), (0.1, 10.0), (0.25, 100.0), (math.inf, 100.0)]

    assert histogram_quantile(0.95, buckets) == pytest.approx(0.241667, abs=1e-6)
    assert histogram_quantile(0.05, buckets) == pytest.approx(0.055)  # 0.01 + 0.09 * 5/10


def test_quantile_beyond_the_last_finite_bucket_is_that_bound() -> None:
    assert histogram_quantile(0.99, [(0.1, 1.0), (0.5, 2.0), (math.inf, 10.0)]) == 0.5


def test_quantile_of_an_empty_histogram_is_none() -> None:
    assert histogram_quantile(0.95, []) is None
    assert histogram_quantile(0.95, [(0.1, 0.0), (math.inf, 0.0)]) is None


def scrape_of(registry: CollectorRegistry, at_s: float = 0.0) -> Scrape:
    """What /metrics would answer for ``registry``, parsed."""
    return Scrape.parse(generate_latest(registry).decode(), at_s)


def test_statuses_combine_traffic_latency_drift_and_online_scores_per_version() -> None:
    registry = CollectorRegistry()
    serving, monitoring = ServingMetrics.create(registry), MonitoringMetrics.create(registry)
    for version in ("1", "2"):
        serving.model_ready.labels("iris", version).set(1)
    for protocol, status, count in (("v1", "200", 6), ("v2", "200", 2), ("v2", "400", 2)):
        serving.requests.labels("iris", "2", protocol, status).inc(count)
        for _ in range(count):
            serving.latency.labels("iris", "2", protocol).observe(0.004)
    serving.errors.labels("iris", "2", "v2", "400").inc(2)
    serving.requests.labels("", "", "v2", "200").inc(50)  # health checks: no model
    for feature, drifted in (("x1", 1), ("x2", 0), ("__prediction__", 1)):
        monitoring.drift_detected.labels("iris", "2", feature).set(drifted)
        monitoring.drift_statistic.labels("iris", "2", feature).set(0.5)
    monitoring.drift_share.labels("iris", "2").set(0.5)
    monitoring.drift_window_rows.labels("iris", "2").set(300)
    monitoring.online_accuracy.labels("iris", "2").set(0.9)
    monitoring.online_labelled_rows.labels("iris", "2").set(40)
    # Version 1 had a drift check with too few rows: a share of 0, but no statistics.
    monitoring.drift_share.labels("iris", "1").set(0)
    monitoring.drift_window_rows.labels("iris", "1").set(3)
    monitoring.online_labelled_rows.labels("iris", "1").set(0)

    first, second = version_statuses(scrape_of(registry))

    assert (first.model, first.version, first.ready, first.requests) == ("iris", "1", True, 0)
    assert first.error_rate is None
    assert first.p95_s is None
    assert first.drift_share is None
    assert first.drift_window_rows == 3
    assert (first.accuracy, first.labelled_rows) == (None, 0)
    assert (second.version, second.requests, second.errors) == ("2", 10, 2)
    assert second.error_rate == pytest.approx(0.2)
    assert second.p95_s is not None
    assert 0.0025 < second.p95_s <= 0.005  # inside the observations' bucket
    assert second.drift_share == 0.5
    assert second.drifted == ("prediction", "x1")
    assert (second.accuracy, second.mae, second.labelled_rows) == (0.9, None, 40)


def test_a_version_that_is_not_ready_says_so() -> None:
    registry = CollectorRegistry()
    ServingMetrics.create(registry).model_ready.labels("price", "3").set(0)

    (status,) = version_statuses(scrape_of(registry))

    assert (status.model, status.version, status.ready) == ("price", "3", False)


def test_rate_is_the_growth_between_two_scrapes_over_the_time_between_them() -> None:
    registry = CollectorRegistry()
    requests = ServingMetrics.create(registry).requests
    requests.labels("iris", "1", "v1", "200").inc(10)
    before = scrape_of(registry, at_s=100.0)
    requests.labels("iris", "1", "v1", "200").inc(5)
    requests.labels("iris", "1", "v2", "503").inc(1)
    after = scrape_of(registry, at_s=102.0)

    assert requests_per_second(before, after) == {("iris", "1"): 3.0}
    assert requests_per_second(after, after) == {}
