"""The prediction log under load and SIGTERM: N acknowledged predictions give exactly N records.

Real `mlserve serve` processes take requests from 8 concurrent clients over every protocol
(OIP JSON and binary, /v1 predict, /invocations), single- and multi-row, and are stopped with
SIGTERM while the load is still going; in the first test the log file is locked from before
the signal until shutdown has begun, so a backlog of acknowledged predictions is still queued.
Afterwards the log must hold one predicted row per acknowledged row, with the prediction the
client received, and nothing else.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from serving_harness import (
    IRIS,
    IRIS_FEATURES,
    LiveServer,
    ServingProject,
    binary_request,
    decode_binary_response,
    launch,
    shutdown,
    v2_matrix_request,
    wait_for_every_worker,
)

from mlserve.monitoring.predlog import PredictionLogStore

CLIENTS = 8
LOAD_DEADLINE_S = 90.0
PROTOCOLS = ("v2-json", "v2-binary", "v1", "invocations")


@dataclass
class Sent:
    """One request of the load and what came back."""

    request_id: str
    protocol: str
    rows: list[list[float]]
    status: int | None = None
    predictions: list[Any] | None = None


def send(client: httpx.Client, sent: Sent) -> None:
    """Send ``sent`` over its protocol on a fresh connection; fill in status and predictions."""
    headers = {"x-request-id": sent.request_id, "connection": "close"}
    if sent.protocol == "v2-json":
        response = client.post(
            f"/v2/models/{IRIS}/infer", json=v2_matrix_request(sent.rows), headers=headers
        )
        if response.status_code == 200:
            sent.predictions = response.json()["outputs"][0]["data"]
    elif sent.protocol == "v2-binary":
        body, binary_headers = binary_request(
            [("input-0", np.asarray(sent.rows, dtype=np.float64), "FP64")],
            parameters={"binary_data_output": True},
        )
        response = client.post(
            f"/v2/models/{IRIS}/infer", content=body, headers={**headers, **binary_headers}
        )
        if response.status_code == 200:
            sent.predictions = decode_binary_response(response)["predict"].tolist()
    elif sent.protocol == "v1":
        response = client.post(
            f"/v1/models/{IRIS}:predict", json={"instances": sent.rows}, headers=headers
        )
        if response.status_code == 200:
            sent.predictions = response.json()["predictions"]
    else:
        split = {"dataframe_split": {"columns": IRIS_FEATURES, "data": sent.rows}}
        response = client.post("/invocations", json=split, headers=headers)
        if response.status_code == 200:
            sent.predictions = response.json()["predictions"]
    sent.status = response.status_code


def load(server: LiveServer, log: list[Sent], stop: threading.Event, seed: int) -> None:
    """Send requests until the server refuses connections after ``stop`` is set."""
    rng = np.random.default_rng(seed)
    deadline = time.monotonic() + LOAD_DEADLINE_S
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while time.monotonic() < deadline:
            rows = int(rng.choice([1, 1, 1, 2, 5, 17]))
            sent = Sent(
                request_id=uuid.uuid4().hex,
                protocol=PROTOCOLS[int(rng.integers(len(PROTOCOLS)))],
                rows=rng.uniform(0.1, 8.0, size=(rows, 4)).round(2).tolist(),
            )
            log.append(sent)
            try:
                send(client, sent)
            except httpx.TransportError as exc:  # not acknowledged: must not be logged
                if isinstance(exc, httpx.ConnectError) and stop.is_set():
                    return  # the listener is closed: the server is shutting down


def logged_rows(database: Path) -> list[tuple[str, int, Any]]:
    """(request_id, row, prediction) of every predicted row in the prediction log file, read
    back through the store's export."""
    store = PredictionLogStore(f"sqlite:///{database}")
    try:
        frame = store.export(IRIS, None)
        assert store.count() == len(frame)  # nothing logged under another model
    finally:
        store.close()
    return list(
        zip(
            frame["request_id"].tolist(),
            frame["row"].tolist(),
            frame["prediction"].tolist(),
            strict=True,
        )
    )


def queue_depth(server: LiveServer) -> float:
    """The prediction log's queue depth as /metrics reports it."""
    text = httpx.get(f"{server.url}/metrics", headers={"connection": "close"}, timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith("mlserve_prediction_log_queue_depth"))
    return float(line.split()[-1])


def run_load_then_sigterm(
    server: LiveServer, acknowledged_before_signal: int, lock_database: Path | None = None
) -> list[Sent]:
    """Load the server from CLIENTS threads, SIGTERM it mid-load, return every request sent.

    With ``lock_database``, the log file is locked (the writer is stuck) from before the signal
    until the application shutdown has begun, so a backlog of acknowledged predictions is still
    queued when it does: only writing the queue on shutdown saves them.
    """
    stop = threading.Event()
    logs: list[list[Sent]] = [[] for _ in range(CLIENTS)]
    threads = [
        threading.Thread(target=load, args=(server, logs[i], stop, i), daemon=True)
        for i in range(CLIENTS)
    ]
    blocker = None
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + LOAD_DEADLINE_S
        while sum(s.status == 200 for log in logs for s in log) < acknowledged_before_signal:
            assert time.monotonic() < deadline, "the load never got going"
            assert server.process.poll() is None, server.stderr()[-3000:]
            time.sleep(0.02)
        if lock_database is not None:
            blocker = sqlite3.connect(lock_database, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            while queue_depth(server) < 200:  # the writer is stuck; the backlog builds up
                assert time.monotonic() < deadline, "the backlog never built up"
                time.sleep(0.02)
        stop.set()
        server.process.send_signal(signal.SIGTERM)
        if blocker is not None:
            server.wait_for_log(
                lambda r: r.get("message") == "Waiting for application shutdown.", timeout_s=60
            )
            time.sleep(0.5)
            assert server.process.poll() is None, "exited with records unwritten"
            blocker.execute("ROLLBACK")
            blocker.close()
            blocker = None
        assert server.process.wait(60) == 0, server.stderr()[-3000:]
        for thread in threads:
            thread.join(LOAD_DEADLINE_S)
            assert not thread.is_alive()
    finally:
        stop.set()
        if blocker is not None:
            blocker.close()
        shutdown(server)
    return [s for log in logs for s in log]


def assert_exactly_the_acknowledged_rows(everything: list[Sent], database: Path) -> None:
    """One record per row of each 2xx answer, with its prediction; no other records."""
    acknowledged = [s for s in everything if s.status == 200]
    expected = sorted(
        (s.request_id, row, prediction)
        for s in acknowledged
        for row, prediction in enumerate(s.predictions or [])
    )
    assert all(len(s.predictions or []) == len(s.rows) for s in acknowledged)
    assert sorted(logged_rows(database)) == expected
    assert {s.protocol for s in acknowledged} == set(PROTOCOLS)
    assert any(len(s.rows) > 1 for s in acknowledged)
    refused = [s for s in everything if s.status not in (None, 200)]
    assert all(s.status == 503 for s in refused), refused


@pytest.mark.slow
def test_sigterm_under_load_logs_exactly_the_acknowledged_predictions(
    serving_project: ServingProject, tmp_path: Path
) -> None:
    database = tmp_path / "log" / "predictions.db"
    env = {
        "MLSERVE_PREDICTION_LOG_URL": f"sqlite:///{database}",
        "MLSERVE_DRAIN_TIMEOUT_S": "20",
        "MLSERVE_PREDICTION_LOG_BATCH_SIZE": "16",  # small batches: many transactions
        "MLSERVE_ACCESS_LOG": "false",
    }
    with launch(serving_project.root, IRIS, env=env, log_dir=tmp_path) as server:
        server.wait_ready()
        everything = run_load_then_sigterm(server, 300, lock_database=database)
    assert_exactly_the_acknowledged_rows(everything, database)
    assert '"message":"prediction log stopped"' in server.stderr()


@pytest.mark.slow
def test_worker_processes_share_one_log_file_and_each_writes_its_own_on_sigterm(
    serving_project: ServingProject, tmp_path: Path
) -> None:
    database = tmp_path / "predictions.db"
    env = {
        "MLSERVE_PREDICTION_LOG_URL": f"sqlite:///{database}",
        "MLSERVE_DRAIN_TIMEOUT_S": "20",
        "MLSERVE_ACCESS_LOG": "false",
    }
    with launch(serving_project.root, IRIS, "--workers", "2", env=env, log_dir=tmp_path) as server:
        wait_for_every_worker(server)
        # Feedback right after the predictions, each on its own connection (so on either
        # worker): a label is found even when the other worker answered and has not written it.
        labelled = [
            Sent(f"fb-{i}-{uuid.uuid4().hex}", "v1", [[5.1, 3.5, 1.4, 0.2]]) for i in range(20)
        ]
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for sent in labelled:
                send(client, sent)
            labels = [s.predictions[0] for s in labelled if s.predictions]
            feedback = {"request_ids": [s.request_id for s in labelled], "labels": labels}
            response = client.post(
                f"/v1/models/{IRIS}/feedback", json=feedback, headers={"connection": "close"}
            )
        assert response.json() == {"joined": 20, "unknown": []}, response.text
        everything = labelled + run_load_then_sigterm(server, 120)
    assert_exactly_the_acknowledged_rows(everything, database)
    assert server.stderr().count('"message":"prediction log stopped"') == 2
