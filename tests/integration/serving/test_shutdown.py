"""Graceful shutdown: SIGTERM refuses new connections, drains in-flight requests, exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from serving_harness import (
    IRIS,
    LiveServer,
    ServingProject,
    launch,
    shutdown,
    v2_matrix_request,
)

from mlserve.serving import create_app, discover_model_dir
from mlserve.serving.server import DrainingServer
from mlserve.settings import Settings

LOAD_THREADS = 8
LOAD_DEADLINE_S = 60.0


@dataclass
class Outcome:
    """What one request of the load got: a response, or the transport error instead."""

    request_id: str
    rows: list[list[float]]
    status: int | None = None
    body: dict[str, Any] | None = None
    error: str | None = None
    sent_at: float = 0.0


DRAIN_TIMEOUTS_S = {"load": 10.0, "in-flight": 20.0, "bounded": 1.0, "ctrl-c": 5.0}
"""One server per shutdown test, by name, with its drain timeout."""


@pytest.fixture(scope="module")
def drain_servers(
    serving_project: ServingProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LiveServer]]:
    """Ready iris servers for the shutdown tests, started side by side to save time."""
    logs = tmp_path_factory.mktemp("shutdown-logs")
    servers: dict[str, LiveServer] = {}
    try:
        for name, drain_timeout_s in DRAIN_TIMEOUTS_S.items():
            env = {"MLSERVE_DRAIN_TIMEOUT_S": str(drain_timeout_s)}
            servers[name] = launch(serving_project.root, IRIS, env=env, log_dir=logs)
        for server in servers.values():
            server.wait_ready()
        yield servers
    finally:
        for server in servers.values():
            shutdown(server)


def load(server: LiveServer, outcomes: list[Outcome], stop: threading.Event, seed: int) -> None:
    """Send requests, one fresh connection each, until the server refuses connections."""
    rng = np.random.default_rng(seed)
    url = f"{server.url}/v2/models/{IRIS}/infer"
    deadline = time.monotonic() + LOAD_DEADLINE_S
    while time.monotonic() < deadline:
        rows = rng.uniform(0.1, 8.0, size=(int(rng.integers(1, 200)), 4)).round(2).tolist()
        outcome = Outcome(request_id=uuid.uuid4().hex, rows=rows, sent_at=time.monotonic())
        outcomes.append(outcome)
        try:
            response = httpx.post(
                url,
                json=v2_matrix_request(rows),
                headers={"x-request-id": outcome.request_id, "connection": "close"},
                timeout=30,
            )
        except httpx.TransportError as exc:
            outcome.error = type(exc).__name__
            if isinstance(exc, httpx.ConnectError) and stop.is_set():
                return  # the listening socket is closed: shutdown refuses new connections
            continue
        outcome.status = response.status_code
        outcome.body = response.json()


def poll_readiness(server: LiveServer, seen: list[str], stop: threading.Event) -> None:
    """Record /v2/health/ready answers (status code, or the transport error) until refused."""
    deadline = time.monotonic() + LOAD_DEADLINE_S
    while time.monotonic() < deadline:
        try:
            response = httpx.get(
                f"{server.url}/v2/health/ready", headers={"connection": "close"}, timeout=10
            )
            seen.append(str(response.status_code))
        except httpx.ConnectError:
            seen.append("refused")
            if stop.is_set():
                return
        except httpx.TransportError as exc:
            seen.append(type(exc).__name__)
        time.sleep(0.005)


def test_sigterm_during_load_answers_every_acknowledged_request(
    serving_project: ServingProject, drain_servers: dict[str, LiveServer]
) -> None:
    server = drain_servers["load"]
    stop = threading.Event()
    outcomes: list[list[Outcome]] = [[] for _ in range(LOAD_THREADS)]
    readiness: list[str] = []
    threads = [
        threading.Thread(target=load, args=(server, outcomes[i], stop, i), daemon=True)
        for i in range(LOAD_THREADS)
    ]
    threads.append(
        threading.Thread(target=poll_readiness, args=(server, readiness, stop), daemon=True)
    )
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while sum(o.status == 200 for t in outcomes for o in t) < 100:
            assert time.monotonic() < deadline, "the load never got going"
            time.sleep(0.02)
        stop.set()
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(30)
        for thread in threads:
            thread.join(LOAD_DEADLINE_S)
            assert not thread.is_alive()
    finally:
        stop.set()
        shutdown(server)

    assert exit_code == 0
    everything = [o for t in outcomes for o in t]
    answered = [o for o in everything if o.status is not None]
    assert len(answered) >= 100
    for outcome in answered:
        assert outcome.body is not None
        if outcome.status == 200:
            expected = serving_project.predict(IRIS, outcome.rows).tolist()
            assert outcome.body["outputs"][0]["data"] == expected
        else:
            assert outcome.status == 503, outcome
            assert set(outcome.body) == {"error"}
            assert "shutting down" in str(outcome.body["error"])

    # Acknowledged = the server handled it (its access log names the request id).
    # Every such request reached its client, with the status the server logged.
    logged = {
        r["request_id"]: r["status"]
        for r in server.log_records()
        if r.get("message") == "request" and r.get("path", "").endswith("/infer")
    }
    by_id = {o.request_id: o for o in everything}
    for request_id, status in logged.items():
        assert by_id[request_id].status == status, by_id[request_id]
    unanswered = [o for o in everything if o.status is None]
    assert all(o.request_id not in logged for o in unanswered)

    # Readiness: 200 until the signal, then never 200 again.
    first_not_ready = next(i for i, s in enumerate(readiness) if s != "200")
    assert "200" not in readiness[first_not_ready:], readiness[first_not_ready:]
    assert readiness[-1] == "refused"
    assert set(readiness[first_not_ready:]) <= {
        "503",
        "refused",
        "ReadError",
        "RemoteProtocolError",
    }
    stderr = server.stderr()
    assert '"message":"shutting down"' in stderr


def open_partial_request(
    server: LiveServer, rows: list[list[float]]
) -> tuple[socket.socket, bytes]:
    """Send the headers and half of an infer request's body; return the socket and the rest."""
    body = json.dumps(v2_matrix_request(rows)).encode()
    head = (
        f"POST /v2/models/{IRIS}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    half = len(body) // 2
    sock.sendall(head + body[:half])
    return sock, body[half:]


def read_response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """Read one HTTP/1.1 response with a Content-Length to its end."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed early: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    return status, json.loads(rest[:length])


def wait_in_flight(server: LiveServer, count: int = 1, timeout_s: float = 30.0) -> None:
    """Wait until the server is handling ``count`` v2 requests (its in-flight gauge says so)."""
    deadline = time.monotonic() + timeout_s
    pattern = f'mlserve_requests_in_flight{{protocol="v2"}} {float(count)}'
    while (
        pattern
        not in httpx.get(f"{server.url}/metrics", headers={"connection": "close"}, timeout=10).text
    ):
        assert time.monotonic() < deadline, "the request never reached the application"
        time.sleep(0.02)


def wait_refused(port: int, timeout_s: float = 10.0) -> None:
    """Wait until connecting to ``port`` is refused."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return
        assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
        time.sleep(0.02)


def test_in_flight_request_completes_after_sigterm(
    serving_project: ServingProject, drain_servers: dict[str, LiveServer]
) -> None:
    server = drain_servers["in-flight"]
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    try:
        sock, rest = open_partial_request(server, rows)
        with sock:
            wait_in_flight(server)  # the handler is waiting for the rest of the body
            server.process.send_signal(signal.SIGTERM)
            wait_refused(server.port)
            assert server.process.poll() is None  # still draining
            sock.sendall(rest)
            status, body = read_response(sock)
        exit_code = server.process.wait(30)
    finally:
        shutdown(server)
    assert status == 200
    assert body["outputs"][0]["data"] == serving_project.predict(IRIS, rows).tolist()
    assert exit_code == 0


def test_drain_time_is_bounded(drain_servers: dict[str, LiveServer]) -> None:
    drain_timeout_s = DRAIN_TIMEOUTS_S["bounded"]
    server = drain_servers["bounded"]
    try:
        sock, _rest = open_partial_request(server, [[5.1, 3.5, 1.4, 0.2]])
        with sock:  # the body never completes
            wait_in_flight(server)
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            exit_code = server.process.wait(30)
            elapsed = time.monotonic() - signalled
    finally:
        shutdown(server)
    assert exit_code == 0
    assert drain_timeout_s <= elapsed < drain_timeout_s + 10


def test_ctrl_c_exits_zero(drain_servers: dict[str, LiveServer]) -> None:
    server = drain_servers["ctrl-c"]
    try:
        server.process.send_signal(signal.SIGINT)
        exit_code = server.process.wait(30)
    finally:
        shutdown(server)
    assert exit_code == 0


def test_readiness_turns_false_the_moment_the_signal_arrives(
    model_dir: Path, tmp_path: Path
) -> None:
    """In process: between SIGTERM and uvicorn closing its socket, health and infer say 503."""
    app = create_app(Settings(home=tmp_path / "home"), discover_model_dir(model_dir / IRIS))
    server = DrainingServer(uvicorn.Config(app), app.state.mlserve)
    body = v2_matrix_request([[5.1, 3.5, 1.4, 0.2]])

    async def scenario() -> tuple[int, httpx.Response, httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://mlserve") as client:
                deadline = time.monotonic() + 60
                while (await client.get("/v2/health/ready")).status_code != 200:
                    assert time.monotonic() < deadline, "models never loaded"
                    await asyncio.sleep(0.02)
                before = (await client.post(f"/v2/models/{IRIS}/infer", json=body)).status_code
                server.handle_exit(signal.SIGTERM, None)
                ready = await client.get("/v2/health/ready")
                infer = await client.post(f"/v2/models/{IRIS}/infer", json=body)
                return before, ready, infer

    before, ready, infer = asyncio.run(scenario())
    assert before == 200
    assert server.should_exit
    assert ready.status_code == 503
    assert ready.json() == {"ready": False, "error": "not ready: shutting down"}
    assert infer.status_code == 503
    assert infer.headers["retry-after"] == "1"
    assert infer.json() == {"error": "the server is shutting down"}


def test_the_gil_switch_interval_holds_while_serving_and_is_restored_after(
    model_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home", switch_interval_ms=1.5, prediction_log=False)
    app = create_app(settings, discover_model_dir(model_dir / IRIS))
    before = sys.getswitchinterval()

    async def scenario() -> float:
        async with app.router.lifespan_context(app):
            return sys.getswitchinterval()

    assert asyncio.run(scenario()) == pytest.approx(0.0015)
    assert sys.getswitchinterval() == before
