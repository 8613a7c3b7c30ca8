"""The dashboard and alert rules as data, promtool, and real Prometheus processes.

Plain functions and a dataclass (not fixtures) so tests can start Prometheus with their own
configuration; conftest.py builds the shared fixtures from these.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import free_port

from mlserve.scaffold import template_path

DASHBOARD = template_path("monitoring/grafana-dashboard.json")
ALERT_RULES = template_path("monitoring/prometheus-alerts.yml")
SCRAPE_CONFIG = template_path("monitoring/prometheus.yml")
ALERT_TESTS = Path(__file__).with_name("prometheus-alerts.test.yml")
"""promtool unit tests of the alert rules, on synthetic series."""

PROMTOOL_TIMEOUT_S = 60.0
PROMETHEUS_START_TIMEOUT_S = 60.0
PROMETHEUS_STOP_TIMEOUT_S = 20.0
HTTP_TIMEOUT_S = 10.0

METRIC_NAME = re.compile(r"\bmlserve_[a-z0-9_]+\b")
"""Every metric we export starts with mlserve_; PromQL functions and labels never do."""
SERIES_SUFFIXES = ("_bucket", "_sum", "_count")
"""What a histogram's samples add to its name."""

GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    '"$model"': '".+"',
    '"$version"': '".+"',
}
"""How Grafana would fill the dashboard's variables (all models), to get plain PromQL."""


# -- the monitored project ------------------------------------------------------------------------

CLASSIFIER = "clicks"
"""Classifier on two numeric features and a categorical one; labels "yes" and "no"."""
REGRESSOR = "price"
"""Regressor on two numeric features."""
DRIFT_MIN_ROWS = 20
"""The monitored server judges drift once this many rows are logged."""


def classifier_frame(rows: int, seed: int) -> pd.DataFrame:
    """Features x1, x2 (standard normal) and plan (three categories), without the target."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x1": rng.normal(size=rows).round(3),
            "x2": rng.normal(size=rows).round(3),
            "plan": rng.choice(["basic", "pro", "team"], rows),
        }
    )


def classifier_labels(frame: pd.DataFrame) -> list[str]:
    """The true label of each row: "yes" when x1 + x2 > 0."""
    return ["yes" if a + b > 0 else "no" for a, b in zip(frame["x1"], frame["x2"], strict=True)]


def regressor_frame(rows: int, seed: int) -> pd.DataFrame:
    """Features x1, x2 (standard normal)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"x1": rng.normal(size=rows).round(3), "x2": rng.normal(size=rows).round(3)}
    )


def regressor_targets(frame: pd.DataFrame) -> list[float]:
    """The true value of each row: 3 x1 - 2 x2 + 0.5."""
    return [float(v) for v in 3 * frame["x1"] - 2 * frame["x2"] + 0.5]


# -- the dashboard and the rules as data -----------------------------------------------------------


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard JSON."""
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel that is not a row, in order."""
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_exprs() -> dict[str, str]:
    """Panel title (and target ref) -> PromQL with Grafana's variables filled in."""
    exprs = {}
    for panel in dashboard_panels():
        for target in panel["targets"]:
            exprs[f"{panel['title']} [{target['refId']}]"] = as_promql(target["expr"])
    return exprs


def variable_queries() -> list[str]:
    """The template variables' queries (label_values(...), not PromQL themselves)."""
    return [v["definition"] for v in dashboard()["templating"]["list"] if v.get("type") == "query"]


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the rules file, with its group's rules flattened."""
    document = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def as_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced by what they would expand to."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def metric_names(exprs: Iterable[str]) -> set[str]:
    """The metric names an expression uses, as series names (mlserve_requests_total, ...)."""
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}


def base_name(series: str) -> str:
    """A histogram series name without _bucket/_sum/_count."""
    for suffix in SERIES_SUFFIXES:
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series


def exported_names(exposition: str) -> tuple[set[str], set[str]]:
    """(names with samples, names only declared with HELP/TYPE) in a /metrics answer.

    Names are series names without histogram suffixes: counters keep their _total.
    """
    sampled, declared = set(), set()
    for family in text_string_to_metric_families(exposition):
        sampled |= {base_name(s.name) for s in family.samples}
        declared.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return sampled, declared - sampled


def recording_rules_file(exprs: dict[str, str], path: Path) -> Path:
    """Write each expression as a recording rule, so promtool parses it; returns ``path``."""
    rules = [
        {"record": f"mlserve:dashboard:expr_{index}", "expr": expr}
        for index, expr in enumerate(exprs.values())
    ]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return path


# -- traffic ---------------------------------------------------------------------------------------


def predict(
    client: httpx.Client, model: str, record: dict[str, Any], request_id: str | None = None
) -> httpx.Response:
    """POST one row to /v1/models/{model}:predict, with an X-Request-ID when given."""
    headers = {"x-request-id": request_id} if request_id else {}
    return client.post(f"/v1/models/{model}:predict", json={"instances": [record]}, headers=headers)


def send_feedback(client: httpx.Client, model: str, labels: dict[str, Any]) -> httpx.Response:
    """POST true labels (request id -> label of its row 0) to /v1/models/{model}/feedback."""
    feedback = [{"request_id": rid, "label": label, "row": 0} for rid, label in labels.items()]
    return client.post(f"/v1/models/{model}/feedback", json={"feedback": feedback})


# -- binaries --------------------------------------------------------------------------------------


def require_binary(name: str) -> str:
    """The path of ``name``; skip the test when it is missing here, fail when it is missing in CI."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = (
        f"{name} is not installed (Debian package prometheus: "
        "apt-get install -y --no-install-recommends prometheus; .ci/run installs it)"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def run_promtool(
    promtool: str, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run promtool and wait for it."""
    return subprocess.run(
        [promtool, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
        check=False,
    )


# -- a real Prometheus -----------------------------------------------------------------------------


@dataclass
class PrometheusServer:
    """A running `prometheus` process on a loopback port, with its own data folder."""

    process: subprocess.Popen[bytes]
    port: int
    folder: Path

    @property
    def url(self) -> str:
        """Base URL of the web UI and HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """What Prometheus wrote so far."""
        return (self.folder / "prometheus.log").read_text(encoding="utf-8", errors="replace")

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH; the ``data`` of a successful answer."""
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=HTTP_TIMEOUT_S)
        body = response.json()
        assert response.status_code == 200, body
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result: a list of {"metric": labels, "value": [ts, "value"]}."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_until(self, what: str, check: Any, timeout_s: float) -> Any:
        """Poll ``check()`` until it returns something truthy; fail with the log if it never does."""
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process.poll() is None, f"prometheus exited:\n{self.log()[-3000:]}"
            with contextlib.suppress(httpx.TransportError):
                found = check()
                if found:
                    return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not within {timeout_s}s:\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def wait_ready(self, timeout_s: float = PROMETHEUS_START_TIMEOUT_S) -> None:
        """Poll /-/ready until 200."""

        def ready() -> bool:
            return httpx.get(f"{self.url}/-/ready", timeout=HTTP_TIMEOUT_S).status_code == 200

        self.wait_until("/-/ready", ready, timeout_s)

    def wait_targets_up(self, timeout_s: float = PROMETHEUS_START_TIMEOUT_S) -> None:
        """Poll /api/v1/targets until every active target has been scraped and is up."""

        def up() -> bool:
            active = self.api("targets")["activeTargets"]
            return bool(active) and all(t["health"] == "up" for t in active)

        self.wait_until("every target up", up, timeout_s)

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(PROMETHEUS_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(PROMETHEUS_STOP_TIMEOUT_S)


def start_prometheus(
    binary: str, folder: Path, targets: list[str], rule_files: list[Path]
) -> PrometheusServer:
    """Start Prometheus scraping ``targets`` (host:port) every second, evaluating ``rule_files``.

    It does not wait: call wait_ready and wait_targets_up.
    """
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": "mlserve", "static_configs": [{"targets": targets}]}],
    }
    config_path = folder / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    with (folder / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return PrometheusServer(process, port, folder)
