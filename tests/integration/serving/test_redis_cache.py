"""The shared prediction cache on a real Redis: two `mlserve serve` replicas share answers,
log the hits they replay, keep versions apart, and keep answering when Redis dies.

`.ci/run` installs Debian's redis-server; without it these tests skip here and fail in CI.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import (
    CHURN,
    HTTP_TIMEOUT_S,
    IRIS,
    IRIS_FEATURES,
    MLSERVE,
    PRICE,
    LiveServer,
    ServingProject,
    free_port,
    launch,
    server_environment,
    shutdown,
    v2_matrix_request,
)
from steady_load import PROTOCOLS, Answer, ask

from mlserve.monitoring import PredictionLogStore
from mlserve.monitoring.metrics import ServingMetrics
from mlserve.serving.shared_cache import BACKOFF_CAP_S, RedisLink

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
WAIT_S = 30.0
"""Longest any condition below is waited for (other tests may share the two cores)."""
CACHED_ENV = {
    "MLSERVE_MODELS__IRIS__CACHE": "redis",
    "MLSERVE_MODELS__CHURN__CACHE": "redis",
    "MLSERVE_MODELS__PRICE__CACHE": "redis",
    "MLSERVE_MODELS__PRICE__CACHE_MAX_ENTRY_BYTES": "4096",
    "MLSERVE_VERSIONS": "all",  # iris 1 and 2 both answer
    "MLSERVE_DRIFT_INTERVAL_S": "0",
    # Generous, so a busy machine does not turn a healthy call into a miss; a dead Redis is
    # refused at once anyway, and the timeout itself is tested on a frozen Redis below.
    "MLSERVE_REDIS_TIMEOUT_MS": "1000",
}


# -- a real Redis ----------------------------------------------------------------------------------


def _redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        reason = "redis-server is not installed (apt-get install -y redis-server; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@dataclass
class RedisServer:
    """A redis-server process on a loopback port, killed and started again on the same port."""

    binary: str
    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where clients connect."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A plain client for looking at what the servers stored."""
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def start(self) -> None:
        """Start with no persistence (a restart comes back empty); wait until it answers."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                "--logfile",
                str(self.folder / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + WAIT_S
        with self.client() as client:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    assert self.process.poll() is None, (self.folder / "redis.log").read_text()
                    assert time.monotonic() < deadline, "redis-server did not answer"
                    time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: gone at once, connections cut, nothing saved."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def is_running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh Redis for this module; killed afterwards."""
    server = RedisServer(_redis_server_binary(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def running_redis(redis_server: RedisServer) -> RedisServer:
    """The module's Redis, running (a test before may have killed it) and empty."""
    if not redis_server.is_running():
        redis_server.start()
    with redis_server.client() as client:
        client.flushdb()
    return redis_server


@dataclass(frozen=True)
class Replicas:
    """Two servers on one registry, one Redis and one prediction log."""

    a: LiveServer
    b: LiveServer
    prediction_log_url: str


@pytest.fixture(scope="module")
def replicas(
    serving_project: ServingProject,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Replicas]:
    """Two `mlserve serve` processes caching iris, churn and price in Redis."""
    logs = tmp_path_factory.mktemp("redis-replicas")
    log_url = f"sqlite:///{logs / 'predictions.db'}"
    env = {
        **CACHED_ENV,
        "MLSERVE_REDIS_URL": redis_server.url,
        "MLSERVE_PREDICTION_LOG_URL": log_url,
    }
    servers = [launch(serving_project.root, env=env, log_dir=logs) for _ in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        yield Replicas(servers[0], servers[1], log_url)
    finally:
        for server in servers:
            shutdown(server)


# -- helpers ---------------------------------------------------------------------------------------


def scrape(server: LiveServer) -> Samples:
    """Every sample of one /metrics scrape, keyed by (name, labels)."""
    response = httpx.get(f"{server.url}/metrics", timeout=HTTP_TIMEOUT_S)
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def count(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def growth(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much ``name`` grew between two scrapes."""
    return count(after, name, **labels) - count(before, name, **labels)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def post(server: LiveServer, path: str, body: dict[str, Any], request_id: str) -> httpx.Response:
    """POST a JSON body with our own request id; the answer must be 200."""
    response = httpx.post(
        f"{server.url}{path}",
        json=body,
        headers={"x-request-id": request_id},
        timeout=HTTP_TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    return response


def logged(log_url: str, model: str, request_id: str) -> list[Any]:
    """The prediction-log records of one request, waited for (the writer batches)."""
    store = PredictionLogStore(log_url)
    try:
        found: list[Any] = []

        def written() -> bool:
            found[:] = [r for r in store.read_records(model) if r.request_id == request_id]
            return bool(found)

        wait_for(written, f"the prediction log record of {request_id}")
        return found
    finally:
        store.close()


def cache_events(server: LiveServer) -> list[str]:
    """The shared cache's messages in the server's log, in order."""
    return [
        r["message"]
        for r in server.log_records()
        if r.get("message", "").startswith("shared cache")
    ]


# -- replicas share answers ------------------------------------------------------------------------


def test_a_response_computed_by_one_replica_is_a_hit_on_the_other(
    replicas: Replicas,
    running_redis: RedisServer,
    iris_rows: pd.DataFrame,
    churn_rows: pd.DataFrame,
) -> None:
    """Numeric tensors (iris) and records with text and nulls (churn, a frame inside)."""
    probes = [
        (IRIS, f"/v2/models/{IRIS}/infer", v2_matrix_request(iris_rows.iloc[:3].to_numpy())),
        (
            CHURN,
            f"/v1/models/{CHURN}:predict",
            {
                "instances": json.loads(churn_rows.iloc[:4].to_json(orient="records")),
                "probabilities": True,
            },
        ),
    ]
    a, b = replicas.a, replicas.b
    before_a, before_b = scrape(a), scrape(b)
    with running_redis.client() as client:
        for number, (model, path, body) in enumerate(probes):
            computed = post(a, path, body, f"on-a-{model}")
            wait_for(lambda n=number: client.dbsize() == n + 1, f"{model}'s entry in Redis")
            replayed = post(b, path, body, f"on-b-{model}")
            assert replayed.content == computed.content, model
            assert replayed.headers["x-model-version"] == computed.headers["x-model-version"]
            assert replayed.headers["x-request-id"] == f"on-b-{model}"
        keys = sorted(client.scan_iter())
        ttls = [client.pttl(k) for k in keys]
    after_a, after_b = scrape(a), scrape(b)

    for model, *_ in probes:
        assert growth(before_a, after_a, "mlserve_cache_misses_total", model=model) == 1
        assert growth(before_a, after_a, "mlserve_cache_hits_total", model=model) == 0
        assert growth(before_b, after_b, "mlserve_cache_hits_total", model=model) == 1
        assert growth(before_b, after_b, "mlserve_cache_misses_total", model=model) == 0
        # the hit never reached B's model
        assert growth(before_b, after_b, "mlserve_rows_total", model=model) == 0
    for after in (after_a, after_b):
        assert count(after, "mlserve_cache_errors_total") == 0
    # keys name the model and version; every one expires (default TTL 300 s)
    assert [k.split(b":")[3:5] for k in keys] == [
        [CHURN.encode(), b"1"],
        [IRIS.encode(), b"2"],
    ]
    assert all(0 < ttl <= 300_000 for ttl in ttls), ttls

    # B logged its hits under its own request ids, as the predictions A made
    for model, *_ in probes:
        made = logged(replicas.prediction_log_url, model, f"on-a-{model}")
        replayed_records = logged(replicas.prediction_log_url, model, f"on-b-{model}")
        assert len(replayed_records) == len(made)
        for original, replay in zip(made, replayed_records, strict=True):
            assert replay.inputs == original.inputs
            assert replay.prediction == original.prediction
            assert replay.proba == original.proba
            assert replay.route == original.route
            assert replay.latency_ms == 0.0


def test_versions_never_share_entries(
    replicas: Replicas, running_redis: RedisServer, iris_rows: pd.DataFrame
) -> None:
    body = v2_matrix_request(iris_rows.iloc[::7].to_numpy(), outputs=[{"name": "predict_proba"}])
    before = scrape(replicas.b)
    old = post(replicas.a, f"/v2/models/{IRIS}/versions/1/infer", body, "version-1-on-a")
    with running_redis.client() as client:
        wait_for(lambda: client.dbsize() == 1, "version 1's entry in Redis")
    new = post(replicas.b, f"/v2/models/{IRIS}/versions/2/infer", body, "version-2-on-b")
    old_again = post(replicas.b, f"/v2/models/{IRIS}/versions/1/infer", body, "version-1-on-b")
    after = scrape(replicas.b)

    assert new.json()["model_version"] == "2"
    assert new.content != old.content
    assert old_again.content == old.content
    assert growth(before, after, "mlserve_cache_misses_total", model=IRIS, version="2") == 1
    assert growth(before, after, "mlserve_cache_hits_total", model=IRIS, version="2") == 0
    assert growth(before, after, "mlserve_cache_hits_total", model=IRIS, version="1") == 1


def test_a_response_larger_than_the_entry_limit_is_not_stored(
    replicas: Replicas, running_redis: RedisServer, price_rows: pd.DataFrame
) -> None:
    """price keeps entries up to 4 KiB: 400 predictions are computed every time."""
    large = {"instances": np.resize(price_rows.to_numpy(), (400, 2)).tolist()}
    small = {"instances": price_rows.iloc[:1].to_numpy().tolist()}
    path = f"/v1/models/{PRICE}:predict"
    assert len(post(replicas.a, path, large, "large-on-a").content) > 4096
    post(replicas.a, path, small, "small-on-a")
    with running_redis.client() as client:
        # stores run in order: once the small one is there, the large one was turned down
        wait_for(lambda: client.dbsize() == 1, "the small entry in Redis")
        assert all(client.strlen(k) <= 4096 for k in client.scan_iter())
    before = scrape(replicas.b)
    post(replicas.b, path, large, "large-on-b")
    post(replicas.b, path, small, "small-on-b")
    after = scrape(replicas.b)
    assert growth(before, after, "mlserve_cache_misses_total", model=PRICE) == 1
    assert growth(before, after, "mlserve_cache_hits_total", model=PRICE) == 1


# -- faults ----------------------------------------------------------------------------------------


@dataclass
class RequestLoop:
    """One thread sending iris rows over three protocols back to back until stopped (at most
    ``limit`` requests); every answer is kept."""

    server: LiveServer
    rows: list[list[float]]
    limit: int = 20_000
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RequestLoop:
        self._thread = threading.Thread(target=self._run, name="redis-fault-load", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(HTTP_TIMEOUT_S + 5)
        assert not self._thread.is_alive(), "the load thread did not stop"

    def _run(self) -> None:
        protocols = PROTOCOLS[:3]  # OIP JSON, OIP binary, /v1: each names the model
        with httpx.Client(base_url=self.server.url, timeout=HTTP_TIMEOUT_S) as client:
            for step in range(self.limit):
                if self._stop.is_set():
                    return
                protocol = protocols[step % len(protocols)]
                index = step % len(self.rows)
                self.answers.append(ask(client, protocol, IRIS, self.rows, index, IRIS_FEATURES))


def settled_rows(log_url: str, model: str) -> int:
    """Rows the prediction log holds for ``model`` once the writers are idle."""
    store = PredictionLogStore(log_url)
    try:
        previous = -1
        while True:
            now = store.count(model)
            if now == previous:
                return now
            previous = now
            time.sleep(0.5)  # longer than the writer lingers for a batch
    finally:
        store.close()


def test_redis_killed_and_restarted_under_load_fails_no_request(
    replicas: Replicas, running_redis: RedisServer, iris_rows: pd.DataFrame
) -> None:
    server = replicas.a
    rows = iris_rows.iloc[:8].to_numpy(dtype=np.float64).tolist()
    events_before = len(cache_events(server))
    logged_before = settled_rows(replicas.prediction_log_url, IRIS)
    start = scrape(server)
    with RequestLoop(server, rows) as load:
        wait_for(
            lambda: growth(start, scrape(server), "mlserve_cache_hits_total", model=IRIS) >= 20,
            "hits from Redis",
        )
        running_redis.kill()
        killed, answered_at_kill = scrape(server), len(load.answers)
        wait_for(
            lambda: (
                growth(killed, scrape(server), "mlserve_cache_errors_total", model=IRIS) >= 20
                and len(load.answers) >= answered_at_kill + 50
            ),
            "requests answered without Redis",
        )
        running_redis.start()  # empty: hits from now on are entries stored after the restart
        restarted = scrape(server)
        wait_for(
            lambda: growth(restarted, scrape(server), "mlserve_cache_hits_total", model=IRIS) >= 20,
            "hits after Redis came back",
        )
    answers = list(load.answers)

    failed = [a for a in answers if a.status != 200]
    assert failed == [], failed[:5]
    assert len(answers) > answered_at_kill + 50
    # one line when Redis went away (not one per request), one when it came back
    assert cache_events(server)[events_before:] == [
        "shared cache unavailable",
        "shared cache available again",
    ]
    # every acknowledged request is in the prediction log, hits and misses alike, exactly once
    expected = logged_before + len(answers)
    store = PredictionLogStore(replicas.prediction_log_url)
    try:
        wait_for(lambda: store.count(IRIS) >= expected, "every answer in the prediction log")
    finally:
        store.close()
    assert settled_rows(replicas.prediction_log_url, IRIS) == expected


def test_the_link_backs_off_logs_once_and_comes_back(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """RedisLink alone against a Redis that is not there, then there, then frozen (SIGSTOP)."""
    caplog.set_level(logging.INFO, logger="mlserve.serving.shared_cache")
    later = RedisServer(redis_server.binary, tmp_path)  # its port has no server yet
    registry = CollectorRegistry()
    errors = ServingMetrics.create(registry).cache_errors.labels(IRIS, "1")
    clock = [0.0]

    async def scenario() -> None:
        link = RedisLink(later.url, timeout_s=0.5, clock=lambda: clock[0])
        try:
            for _ in range(5):  # the first is refused; the rest skip Redis while it backs off
                assert await link.get(b"key", errors) is None
            later.start()
            with later.client() as client:
                client.set(b"key", b"value")
            assert await link.get(b"key", errors) is None  # still backing off: not asked
            clock[0] += BACKOFF_CAP_S + 0.01
            assert await link.get(b"key", errors) == b"value"
            assert await link.get(b"key", errors) == b"value"
            assert later.process is not None
            later.process.send_signal(signal.SIGSTOP)  # alive and silent: only a timeout helps
            try:
                assert await link.get(b"key", errors) is None
            finally:
                later.process.send_signal(signal.SIGCONT)
        finally:
            await link.close()

    try:
        asyncio.run(scenario())
    finally:
        later.kill()
    labels = {"model": IRIS, "version": "1"}
    # 5 while down, 1 while backing off, 1 timed out
    assert registry.get_sample_value("mlserve_cache_errors_total", labels) == 7
    messages = [r.getMessage() for r in caplog.records if r.name == "mlserve.serving.shared_cache"]
    # the timeout came within the log interval of the first line: not logged again
    assert messages == ["shared cache unavailable", "shared cache available again"]


def test_a_bad_redis_url_stops_the_server_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [MLSERVE, "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=server_environment({"MLSERVE_REDIS_URL": "http://cache:6379/0"}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "redis_url" in lines[0]
    assert "redis://" in lines[0]
