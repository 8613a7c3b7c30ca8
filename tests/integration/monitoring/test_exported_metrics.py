"""Every metric the dashboard and the alert rules use is one a real server exports."""

from __future__ import annotations

import time

import httpx
from monitoring_harness import (
    CLASSIFIER,
    REGRESSOR,
    alert_rules,
    base_name,
    classifier_frame,
    classifier_labels,
    dashboard_exprs,
    exported_names,
    metric_names,
    predict,
    regressor_frame,
    regressor_targets,
    send_feedback,
    variable_queries,
)
from serving_harness import LiveServer

ROWS = 40
"""Rows sent to each model, one per request: more than the drift check's minimum."""
CACHED_REPEATS = 5
"""Requests to the cached classifier repeated byte for byte."""
QUIET_ON_A_HEALTHY_SERVER = {
    "mlserve_prediction_log_dropped_total",  # only when the log queue is full and set to drop
    "mlserve_rejected_requests_total",  # only when overloaded or past a deadline
    "mlserve_rollout_rollbacks_total",  # only when a rollout's guardrail breaks
    # only while a rollout is active (tests/integration/serving/test_rollouts.py drives them)
    "mlserve_rollout_weight_percent",
    "mlserve_routed_requests_total",
    "mlserve_shadow_rows_total",
    "mlserve_shadow_requests_total",
    "mlserve_shadow_predict_duration_seconds",
}
"""Declared in /metrics but without samples until something goes wrong."""
SETTLE_TIMEOUT_S = 60.0


def used_metric_names() -> set[str]:
    """Every mlserve_* name in the dashboard (targets and variables) and the rules, without
    histogram suffixes (mlserve_batch_size_bucket is mlserve_batch_size)."""
    exprs = [*dashboard_exprs().values(), *variable_queries()]
    exprs += [rule["expr"] for rule in alert_rules()]
    return {base_name(name) for name in metric_names(exprs)}


def drive_every_metric(server: LiveServer) -> None:
    """Predictions (some cached, one invalid), labels for them and one unknown request id."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        clicks = classifier_frame(ROWS, seed=5)
        price = regressor_frame(ROWS, seed=6)
        for i, record in enumerate(clicks.to_dict(orient="records")):
            assert predict(client, CLASSIFIER, record, f"clicks-{i}").status_code == 200
        for i, record in enumerate(clicks.head(CACHED_REPEATS).to_dict(orient="records")):
            assert predict(client, CLASSIFIER, record, f"clicks-again-{i}").status_code == 200
        for i, record in enumerate(price.to_dict(orient="records")):
            assert predict(client, REGRESSOR, record, f"price-{i}").status_code == 200
        invalid = client.post(f"/v1/models/{REGRESSOR}:predict", json={"rows": []})
        assert invalid.status_code == 400

        labels = {f"clicks-{i}": label for i, label in enumerate(classifier_labels(clicks))}
        response = send_feedback(client, CLASSIFIER, {**labels, "never-sent": "yes"})
        assert response.status_code == 200, response.text
        assert response.json()["unknown"] == ["never-sent"]
        targets = {f"price-{i}": value for i, value in enumerate(regressor_targets(price))}
        response = send_feedback(client, REGRESSOR, targets)
        assert response.status_code == 200, response.text


def test_every_metric_the_dashboard_and_alerts_use_is_exported(
    monitored_server: LiveServer,
) -> None:
    used = used_metric_names()
    assert len(used) > 20  # the regex found the names at all

    drive_every_metric(monitored_server)

    # Drift gauges appear after the next drift check (every second here): wait, bounded.
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        exposition = httpx.get(f"{monitored_server.url}/metrics", timeout=30).text
        sampled, declared = exported_names(exposition)
        missing = used - sampled - QUIET_ON_A_HEALTHY_SERVER
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert used - sampled - declared == set(), "used but not exported at all"
    assert missing == set(), "used but never given a value by real traffic"
