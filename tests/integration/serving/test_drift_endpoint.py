"""Drift in the server: GET /v1/models/{m}/drift on demand, scheduled checks, the gauges.

One `mlserve serve` process (drift checks every second) serves three registrations of one
trained churn model: ``shifty`` gets traffic whose monthly fee moved, ``steady`` traffic from
the training distribution, ``quiet`` none at all.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from drift_customers import customers
from serving_harness import HTTP_TIMEOUT_S, LiveServer, running_server

from mlserve.registry import NewVersion, RegistryStore
from mlserve.training import TrainRequest, train

MODELS = ("shifty", "steady", "quiet")
ROWS_PER_REQUEST = 100


@pytest.fixture(scope="module")
def drift_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("drift-serving")
    training = customers(1500, seed=0)
    training["churned"] = np.where(training["monthly"] + 0.5 * training["tenure"] > 65, "y", "n")
    training.to_csv(root / "churn.csv", index=False)
    home = root / ".mlserve"
    store = RegistryStore(
        f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"), home / "cache"
    )
    try:
        trained = train(store, TrainRequest(data=root / "churn.csv", target="churned")).version
        model_file = store.local_folder(trained) / trained.model_file
        for name in MODELS:
            new = NewVersion(
                "sklearn", trained.signature, reference_profile=trained.reference_profile
            )
            version = store.register_version(name, model_file, new)
            store.set_alias(name, "production", version.version)
    finally:
        store.close()
    env = {"MLSERVE_DRIFT_INTERVAL_S": "1", "MLSERVE_DRIFT_MIN_ROWS": "50"}
    with running_server(root, env=env, log_dir=tmp_path_factory.mktemp("drift-logs")) as server:
        yield server
        # Shutting down with the scheduled checks running is clean too.
        assert server.stop() == 0, server.stderr()[-3000:]


def send(server: LiveServer, model: str, frame: pd.DataFrame) -> None:
    """Predict every row through the simple JSON API (so the server logs them)."""
    records = [
        {k: (None if pd.isna(v) else v) for k, v in row.items()} for row in frame.to_dict("records")
    ]
    with httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT_S) as client:
        for start in range(0, len(records), ROWS_PER_REQUEST):
            chunk = records[start : start + ROWS_PER_REQUEST]
            response = client.post(f"/v1/models/{model}:predict", json={"instances": chunk})
            assert response.status_code == 200, response.text


def drift(server: LiveServer, model: str, **params: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/models/{model}/drift", params=params, timeout=HTTP_TIMEOUT_S)


def gauge(server: LiveServer, name: str, **labels: str) -> float | None:
    """The value of one series on /metrics, or None when it is not there."""
    text = httpx.get(f"{server.url}/metrics", timeout=HTTP_TIMEOUT_S).text
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[1]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match[2])
    return None


def features(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in report["features"]}


def test_shifted_inputs_are_found_on_demand_and_published(drift_server: LiveServer) -> None:
    send(drift_server, "shifty", customers(300, seed=1, monthly_shift=8.0))
    response = drift(drift_server, "shifty", window="1h")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["status"] == "drift"
    assert report["detected"] is True
    assert report["window_rows"] == 300  # queued predictions are written before the check
    by_name = features(report)
    assert by_name["monthly"]["drifted"] is True
    assert by_name["monthly"]["method"] == "ks"
    assert not any(by_name[f]["drifted"] for f in ("plan", "region", "tenure"))
    assert report["share_drifted"] == pytest.approx(0.25)
    series = {"model": "shifty", "version": "1"}
    assert gauge(drift_server, "mlserve_drift_detected", **series, feature="monthly") == 1.0
    assert gauge(drift_server, "mlserve_drift_detected", **series, feature="plan") == 0.0
    statistic = gauge(drift_server, "mlserve_drift_statistic", **series, feature="monthly")
    assert statistic == pytest.approx(by_name["monthly"]["statistic"])
    p_value = gauge(drift_server, "mlserve_drift_p_value", **series, feature="__prediction__")
    assert p_value is not None
    assert 0.0 <= p_value <= 1.0
    assert gauge(drift_server, "mlserve_drift_window_rows", **series) == 300.0
    assert gauge(drift_server, "mlserve_drift_share", **series) == pytest.approx(0.25)


def test_unshifted_inputs_are_not_drift(drift_server: LiveServer) -> None:
    send(drift_server, "steady", customers(300, seed=2))
    response = drift(drift_server, "steady")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["status"] == "no drift"
    assert report["window_rows"] == 300
    assert not any(f["drifted"] for f in report["features"])
    assert "__prediction__" in features(report)


def test_a_model_without_traffic_has_insufficient_data(drift_server: LiveServer) -> None:
    report = drift(drift_server, "quiet", window="30m").json()
    assert report["status"] == "insufficient data"
    assert report["window_rows"] == 0
    assert report["detected"] is False


def test_scheduled_checks_run_without_being_asked(drift_server: LiveServer) -> None:
    series = {"model": "quiet", "version": "1"}
    deadline = time.monotonic() + 60
    first = gauge(drift_server, "mlserve_drift_last_run_timestamp_seconds", **series)
    while first is None:
        assert time.monotonic() < deadline, "no scheduled drift check ran"
        time.sleep(0.2)
        first = gauge(drift_server, "mlserve_drift_last_run_timestamp_seconds", **series)
    later = first
    while later <= first:
        assert time.monotonic() < deadline, "the scheduled drift check ran only once"
        time.sleep(0.2)
        later = gauge(drift_server, "mlserve_drift_last_run_timestamp_seconds", **series) or first
    assert gauge(drift_server, "mlserve_drift_detected", **series, feature="monthly") == 0.0


def test_mistakes_get_client_errors(drift_server: LiveServer) -> None:
    unknown = drift(drift_server, "nope")
    assert unknown.status_code == 404
    assert "not registered" in unknown.json()["error"]
    bad_window = drift(drift_server, "steady", window="soon")
    assert bad_window.status_code == 400
    assert "invalid duration" in bad_window.json()["error"]
    bad_version = drift(drift_server, "steady", version="99")
    assert bad_version.status_code == 404


def test_each_check_is_logged_with_its_outcome(drift_server: LiveServer) -> None:
    record = drift_server.wait_for_log(lambda r: r.get("message") == "drift checked", 30)
    assert record["model"] in MODELS
    assert record["status"] in ("drift", "no drift", "insufficient data")
    assert isinstance(record["window_rows"], int)
