"""A real Prometheus scrapes a live server under load, evaluates the project's alert rules, and
answers through its HTTP API."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from monitoring_harness import (
    ALERT_RULES,
    CLASSIFIER,
    REGRESSOR,
    PrometheusServer,
    alert_rules,
    classifier_frame,
    dashboard_exprs,
    predict,
    start_prometheus,
)
from serving_harness import LiveServer

LOAD_TIMEOUT_S = 90.0
"""How long a test drives load while waiting for Prometheus to see what it expects."""
BURST = 10
"""Requests sent between two looks at Prometheus (it scrapes every second)."""
MAX_REQUESTS = 3000
"""Upper bound of one load loop, whatever the clock says."""
SANE_P95_S = 2.5
"""A p95 of one-row predictions above this is no measurement: something is broken."""

P95 = (
    "histogram_quantile(0.95, sum by (le) "
    f'(rate(mlserve_request_duration_seconds_bucket{{model="{CLASSIFIER}"}}[15s])))'
)
TRAFFIC = 'sum by (model) (rate(mlserve_requests_total{model!=""}[15s]))'


@pytest.fixture(scope="module")
def prometheus(
    prometheus_binary: str, monitored_server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """Prometheus scraping ``monitored_server`` every second with the project's alert rules."""
    server = start_prometheus(
        prometheus_binary,
        tmp_path_factory.mktemp("prometheus"),
        targets=[f"127.0.0.1:{monitored_server.port}"],
        rule_files=[ALERT_RULES],
    )
    try:
        server.wait_ready()
        server.wait_targets_up()
        yield server
    finally:
        server.stop()


def drive_until(server: LiveServer, send: Any, seen: Any) -> Any:
    """Send bursts of requests with ``send(client, i)`` until ``seen()`` returns something truthy.

    Bounded by LOAD_TIMEOUT_S and MAX_REQUESTS; returns what ``seen`` returned.
    """
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    sent = 0
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while True:
            for _ in range(BURST):
                send(client, sent)
                sent += 1
            found = seen()
            if found:
                return found
            assert time.monotonic() < deadline, f"not seen after {sent} requests"
            assert sent < MAX_REQUESTS, f"not seen after {sent} requests"
            time.sleep(0.1)


def number(result: list[dict[str, Any]]) -> float | None:
    """The value of a one-element instant vector, None when empty or NaN."""
    if len(result) != 1:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


def test_prometheus_reads_latency_and_traffic_of_a_live_server(
    prometheus: PrometheusServer, monitored_server: LiveServer
) -> None:
    records = classifier_frame(50, seed=21).to_dict(orient="records")

    def send(client: httpx.Client, i: int) -> None:
        assert predict(client, CLASSIFIER, records[i % len(records)]).status_code == 200

    p95_s = drive_until(monitored_server, send, lambda: number(prometheus.query(P95)))

    assert 0 < p95_s < SANE_P95_S
    traffic = {r["metric"]["model"]: float(r["value"][1]) for r in prometheus.query(TRAFFIC)}
    assert traffic[CLASSIFIER] > 0
    for title, expr in dashboard_exprs().items():  # Prometheus itself accepts every panel
        assert isinstance(prometheus.query(expr), list), title


def rules_by_name(prometheus: PrometheusServer) -> dict[str, dict[str, Any]]:
    """The alerting rules Prometheus has loaded, by alert name."""
    groups = prometheus.api("rules", type="alert")["groups"]
    return {rule["name"]: rule for group in groups for rule in group["rules"]}


def test_alert_rules_load_and_evaluate_on_live_metrics(
    prometheus: PrometheusServer, monitored_server: LiveServer
) -> None:
    expected = {rule["alert"] for rule in alert_rules()}

    def evaluated() -> dict[str, dict[str, Any]] | None:
        rules = rules_by_name(prometheus)
        done = set(rules) == expected and all(r["health"] == "ok" for r in rules.values())
        return rules if done else None

    rules = prometheus.wait_until("every alert rule evaluated", evaluated, 30.0)
    assert rules["MlserveModelNotReady"]["state"] == "inactive"
    not_ready = next(r["expr"] for r in alert_rules() if r["alert"] == "MlserveModelNotReady")
    assert prometheus.query(not_ready) == []  # both models are ready

    floor = prometheus.wait_until(
        "the accuracy floor scraped",
        lambda: prometheus.query(f'mlserve_online_accuracy_floor{{model="{CLASSIFIER}"}}'),
        30.0,
    )
    assert [float(sample["value"][1]) for sample in floor] == [0.5]

    # Every request to the regressor is invalid (400): its client error rate is 100 %, so that
    # alert goes pending at once (it needs 15 minutes to fire); the classifier stays healthy,
    # and no 5xx means no server error alert.
    records = classifier_frame(50, seed=22).to_dict(orient="records")

    def send(client: httpx.Client, i: int) -> None:
        if i % 2:
            assert client.post(f"/v1/models/{REGRESSOR}:predict", json={}).status_code == 400
        else:
            assert predict(client, CLASSIFIER, records[i % len(records)]).status_code == 200

    def client_error_alerts() -> list[dict[str, Any]]:
        rule = rules_by_name(prometheus)["MlserveHighClientErrorRate"]
        return list(rule["alerts"]) if rule["state"] in ("pending", "firing") else []

    alerts = drive_until(monitored_server, send, client_error_alerts)

    assert [a["labels"]["model"] for a in alerts] == [REGRESSOR]
    assert alerts[0]["labels"]["severity"] == "warning"
    assert alerts[0]["annotations"]["summary"] == (
        f"{REGRESSOR}: a quarter of the requests are refused as invalid"
    )
    assert float(alerts[0]["value"]) > 0.25
    assert rules_by_name(prometheus)["MlserveHighErrorRate"]["state"] == "inactive"
