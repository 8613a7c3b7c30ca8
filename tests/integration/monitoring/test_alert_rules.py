"""The alert rules and dashboard that `mlserve init` writes: valid for promtool, and they fire."""

from __future__ import annotations

import shutil
from pathlib import Path

from monitoring_harness import (
    ALERT_RULES,
    ALERT_TESTS,
    SCRAPE_CONFIG,
    alert_rules,
    dashboard,
    dashboard_exprs,
    dashboard_panels,
    recording_rules_file,
    run_promtool,
)

ALERTS = {
    "MlserveHighErrorRate": ("critical", "5m"),
    "MlserveHighClientErrorRate": ("warning", "15m"),
    "MlserveOnlineAccuracyLow": ("critical", "15m"),
    "MlserveHighLatencyP95": ("warning", "5m"),
    "MlserveDriftDetected": ("warning", "10m"),
    "MlserveModelNotReady": ("critical", "2m"),
    "MlservePredictionLogBacklog": ("warning", "5m"),
    "MlservePredictionLogDropping": ("warning", None),
    "MlserveRolloutRolledBack": ("warning", None),
}
"""Alert name -> (severity, for)."""

PANELS = (
    "Requests per second",
    "Error rate",
    "Latency p50 / p95 / p99",
    "Queue depth",
    "Batch size",
    "Cache hit rate",
    "Versions served",
    "Drift share",
    "Drifted features",
    "Online accuracy and F1",
    "Online MAE",
    "Prediction log backlog",
    "Prediction log written / dropped",
)
"""Panels the issue asks for (the dashboard has a few more)."""


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", str(ALERT_RULES))

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_each_alert_fires_on_bad_series_and_not_on_healthy_ones(promtool: str) -> None:
    result = run_promtool(promtool, "test", "rules", str(ALERT_TESTS))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    rules = alert_rules()

    assert {rule["alert"]: (rule["labels"]["severity"], rule.get("for")) for rule in rules} == (
        ALERTS
    )
    for rule in rules:
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]


def test_every_dashboard_expression_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    rules = recording_rules_file(exprs, tmp_path / "dashboard-rules.yml")

    result = run_promtool(promtool, "check", "rules", str(rules))

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_the_scrape_configuration_loads_the_rules_beside_it(promtool: str, tmp_path: Path) -> None:
    for path in (SCRAPE_CONFIG, ALERT_RULES):  # as `mlserve init` lays them out
        shutil.copy(path, tmp_path / path.name)

    result = run_promtool(promtool, "check", "config", SCRAPE_CONFIG.name, cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_dashboard_has_the_panels_and_variables_it_promises() -> None:
    document = dashboard()
    panels = dashboard_panels()
    titles = [panel["title"] for panel in panels]

    assert document["schemaVersion"] == 39
    assert set(PANELS) <= set(titles)
    assert len(titles) == len(set(titles))
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["model"]["definition"] == "label_values(mlserve_model_ready, model)"
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["description"], panel["title"]
        assert panel["targets"], panel["title"]
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
