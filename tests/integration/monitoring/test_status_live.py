"""`mlserve status` against a server that checks drift every second, while traffic flows."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import httpx
from monitoring_harness import (
    CLASSIFIER,
    DRIFT_MIN_ROWS,
    REGRESSOR,
    classifier_frame,
    predict,
    regressor_frame,
)
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import MLSERVE, LiveServer, server_environment

STATUS_TIMEOUT_S = 60.0
PACE_S = 0.01
"""Pause between requests while status runs: steady traffic, not a flood."""
MAX_REQUESTS = int(STATUS_TIMEOUT_S / PACE_S)


def drift_tested(server: LiveServer, model: str) -> bool:
    """True once a drift check of ``model`` computed statistics (enough rows were logged)."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return any(
        sample.name == "mlserve_drift_statistic" and sample.labels["model"] == model
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )


def live_cells(output: str, model: str) -> dict[str, str]:
    """The cells of ``model``'s row in the live table, by column name."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "served models (live)" in line)
    header = next(line for line in lines[start:] if line.startswith("┃"))
    columns = [cell.strip() for cell in header.strip("┃").split("┃")]
    row = next(line for line in lines[start:] if line.startswith(f"│ {model} "))
    return dict(zip(columns, (cell.strip() for cell in row.strip("│").split("│")), strict=True))


def test_status_shows_drift_and_a_rate_while_requests_arrive(
    monitored_server: LiveServer, monitoring_project: Path
) -> None:
    clicks = classifier_frame(DRIFT_MIN_ROWS + 10, seed=31).to_dict(orient="records")
    price = regressor_frame(DRIFT_MIN_ROWS + 10, seed=32).to_dict(orient="records")
    deadline = time.monotonic() + STATUS_TIMEOUT_S
    with httpx.Client(base_url=monitored_server.url, timeout=30) as client:
        for clicks_row, price_row in zip(clicks, price, strict=True):
            assert predict(client, CLASSIFIER, clicks_row).status_code == 200
            assert predict(client, REGRESSOR, price_row).status_code == 200
        while not (
            drift_tested(monitored_server, CLASSIFIER) and drift_tested(monitored_server, REGRESSOR)
        ):
            assert time.monotonic() < deadline, "no drift check with statistics"
            time.sleep(0.2)

        status = subprocess.Popen(
            [MLSERVE, "status", "--server", monitored_server.url],
            cwd=str(monitoring_project),
            env=server_environment({"COLUMNS": "200", "NO_COLOR": "1"}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            sent = 0
            while status.poll() is None:  # requests keep arriving during both scrapes
                assert time.monotonic() < deadline, "status did not finish in time"
                assert sent < MAX_REQUESTS, "status did not finish"
                assert predict(client, CLASSIFIER, clicks[sent % len(clicks)]).status_code == 200
                sent += 1
                time.sleep(PACE_S)
            out, err = status.communicate(timeout=STATUS_TIMEOUT_S)
        finally:
            if status.poll() is None:
                status.kill()
                status.communicate(timeout=STATUS_TIMEOUT_S)

    assert status.returncode == 0, err
    cells = live_cells(out, CLASSIFIER)
    assert cells["state"] == "ready"
    assert float(cells["req/s (1 s)"]) > 0
    assert re.fullmatch(r"\d+%( \(.+\))?", cells["drift"]), cells["drift"]
    assert re.fullmatch(r"\d+%( \(.+\))?", live_cells(out, REGRESSOR)["drift"])
