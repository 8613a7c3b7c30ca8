"""PostgreSQL restarted under load (issue 17): two `mlserve serve` replicas on one PostgreSQL
registry and one PostgreSQL prediction log keep answering while the database is down, report it
once per attempt, pick up an alias moved after it returns, and log exactly the acknowledged
requests; past the prediction log's bound, both `drop` and `block` (the default, which paces
requests only to a writer that is slow, not down) answer and count every dropped record.

The server is this module's own (tests/integration/postgres_process.py): stopped with
`pg_ctl stop -m fast` and started again on the same port and data folder.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from postgres_process import PostgresServer
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import (
    HTTP_TIMEOUT_S,
    IRIS_FEATURES,
    MLSERVE,
    LiveServer,
    running_server,
    server_environment,
)
from sqlalchemy import create_engine, func, select
from steady_load import Answer, SteadyLoad

from mlserve.monitoring.predlog_store import PredictionLogStore, requests_table
from mlserve.registry import NewVersion, RegistryStore
from mlserve.serving.registry_health import RETRY_MOST_S

MODEL = "iris"
RELOAD_INTERVAL_S = 0.5
WAIT_S = 60.0
"""Longest any condition below is waited for (other tests may share the two cores)."""
ANSWERED_WHILE_DOWN = 40
"""Requests each replica must answer while PostgreSQL is down."""
QUEUE_ROWS = 20
"""The prediction log's bound in the past-the-bound tests (MLSERVE_PREDICTION_LOG_QUEUE_SIZE)."""
REGISTRY_DOWN = "registry unreachable; serving what is loaded"
REGISTRY_BACK = "registry reachable again"
WRITE_FAILED = "prediction log write failed"
WRITES_RESUMED = "prediction log writes resumed"
TAKES_AGAIN = "prediction log takes records again"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
_numbers = count()


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """This module's PostgreSQL; removed afterwards."""
    server = PostgresServer.initialized()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def running_postgres(postgres: PostgresServer) -> PostgresServer:
    """The module's PostgreSQL, running (a test that failed midway may have left it stopped)."""
    if not postgres.is_running:
        postgres.start()
    return postgres


@dataclass(frozen=True)
class Cluster:
    """A registry (iris 1 and 2, production -> 1) and a prediction log in fresh databases, and
    the environment that points `mlserve serve` at them."""

    registry_url: str
    log_url: str
    store: RegistryStore
    env: dict[str, str]
    folder: Path


@pytest.fixture
def cluster(
    tmp_path: Path,
    running_postgres: PostgresServer,
    classifier_file: Path,
    new_version: NewVersion,
) -> Iterator[Cluster]:
    number = next(_numbers)
    registry_url = running_postgres.create_database(f"faults_registry_{number}")
    log_url = running_postgres.create_database(f"faults_log_{number}")
    artifacts = tmp_path / "artifacts"
    store = RegistryStore(registry_url, str(artifacts), tmp_path / "cache")
    try:
        for _ in range(2):
            store.register_version(MODEL, classifier_file, new_version)
        store.set_alias(MODEL, "production", 1)
        env = {
            "MLSERVE_DATABASE_URL": registry_url,
            "MLSERVE_ARTIFACT_ROOT": str(artifacts),
            "MLSERVE_PREDICTION_LOG_URL": log_url,
            "MLSERVE_RELOAD_INTERVAL_S": str(RELOAD_INTERVAL_S),
            "MLSERVE_DRIFT_INTERVAL_S": "0",
            "MLSERVE_ACCESS_LOG": "false",
            "MLSERVE_GRPC_PORT": "0",  # two replicas on one machine; these faults are HTTP's
        }
        yield Cluster(registry_url, log_url, store, env, tmp_path)
    finally:
        store.close()


@contextmanager
def replicas(cluster: Cluster, count: int = 2, **extra: str) -> Iterator[list[LiveServer]]:
    """``count`` ready `mlserve serve` processes following ``MODEL``, each in its own folder."""
    env = {**cluster.env, **extra}
    with ExitStack() as stack:
        servers = []
        for number in range(count):
            home = cluster.folder / f"replica-{number}"
            home.mkdir()
            servers.append(
                stack.enter_context(running_server(home, MODEL, env=env, log_dir=cluster.folder))
            )
        yield servers


# -- helpers ----------------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], what: str, servers: Sequence[LiveServer] = ()) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` (and the servers' logs) after
    WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(s.stderr()[-3000:] for s in servers)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.05)


def scrape(server: LiveServer) -> Samples:
    """Every sample of one /metrics scrape, keyed by (name, labels)."""
    response = httpx.get(f"{server.url}/metrics", timeout=HTTP_TIMEOUT_S)
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def metric(server: LiveServer, name: str) -> float:
    """The sum of every sample named ``name`` in one scrape."""
    return sum(value for (n, _), value in scrape(server).items() if n == name)


def records(server: LiveServer, message: str) -> list[dict[str, Any]]:
    """The server's log records with this message, oldest first."""
    return [r for r in server.log_records() if r.get("message") == message]


def ok(answers: Sequence[Answer]) -> int:
    """Acknowledged requests: those answered 200."""
    return sum(a.status == 200 for a in answers)


def rows_of(features: pd.DataFrame) -> list[list[float]]:
    return features.head(10).to_numpy(dtype=float).tolist()


def predict(server: LiveServer, row: list[float]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/models/{MODEL}:predict", json={"instances": [row]}, timeout=30
    )


def logged(log_url: str) -> tuple[int, int]:
    """(rows, distinct request ids) in the prediction log once the writers are idle: the same
    count twice, longer apart than a writer lingers for a batch."""
    engine = create_engine(log_url)
    table = requests_table
    query = select(
        func.coalesce(func.sum(table.c.rows), 0), func.count(table.c.request_id.distinct())
    )
    try:
        previous: tuple[int, int] | None = None
        while True:
            with engine.connect() as connection:
                rows, ids = connection.execute(query.where(table.c.model == MODEL)).one()
            now = (int(rows), int(ids))
            if now == previous:
                return now
            previous = now
            time.sleep(1.0)
    finally:
        engine.dispose()


def wait_for_logged(log_url: str, expected: int, servers: Sequence[LiveServer]) -> None:
    """Until the log holds at least ``expected`` rows (written after the database returned)."""
    store = PredictionLogStore(log_url)
    try:
        wait_for(lambda: store.count(MODEL) >= expected, f"{expected} logged rows", servers)
    finally:
        store.close()


def answered_version(server: LiveServer, row: list[float]) -> str:
    response = predict(server, row)
    assert response.status_code == 200, response.text
    return response.headers["x-model-version"]


def wait_for_version(
    server: LiveServer, row: list[float], version: str, servers: Sequence[LiveServer]
) -> int:
    """Until ``server`` answers with ``version`` (it follows the registry on its own); returns
    how many requests that took (each one acknowledged, so logged)."""
    sent = 0

    def answers_with_it() -> bool:
        nonlocal sent
        sent += 1
        return answered_version(server, row) == version

    wait_for(answers_with_it, f"version {version}", servers)
    return sent


def loads(servers: Sequence[LiveServer], rows: list[list[float]]) -> list[SteadyLoad]:
    """One client thread per replica, cycling over every protocol, polling readiness."""
    return [SteadyLoad(s.url, MODEL, rows, IRIS_FEATURES, threads=1) for s in servers]


# -- a restart under load ---------------------------------------------------------------------------


def test_postgres_restarted_under_load_fails_no_request_and_logs_every_acknowledged_one(
    cluster: Cluster, running_postgres: PostgresServer, iris_features: pd.DataFrame
) -> None:
    rows = rows_of(iris_features)
    with replicas(cluster) as servers:
        # before: load with the database up; the log holds exactly what was acknowledged
        with ExitStack() as stack:
            before = [stack.enter_context(load) for load in loads(servers, rows)]
            wait_for(lambda: all(load.count() >= 30 for load in before), "answers", servers)
        answered_before = [a for load in before for a in load.answers]
        assert [a for a in answered_before if a.status != 200] == []
        acknowledged_before = ok(answered_before)
        assert logged(cluster.log_url) == (acknowledged_before, acknowledged_before)

        # the restart, under load
        marks = [len(s.log_records()) for s in servers]
        with ExitStack() as stack:
            during = [stack.enter_context(load) for load in loads(servers, rows)]
            wait_for(lambda: all(load.count() >= 20 for load in during), "answers", servers)
            running_postgres.stop()
            at_stop = [load.count() for load in during]

            def outage_seen() -> bool:
                return all(
                    records(s, REGISTRY_DOWN) and records(s, WRITE_FAILED)
                    and load.count() >= stopped + ANSWERED_WHILE_DOWN
                    for s, load, stopped in zip(servers, during, at_stop, strict=True)
                )  # fmt: skip

            wait_for(outage_seen, "requests answered while PostgreSQL is down", servers)
            for server in servers:
                # reported, and still ready: loaded models serve, a probe must not pull the pod
                assert metric(server, "mlserve_registry_up") == 0
                ready = httpx.get(f"{server.url}/v2/health/ready", timeout=HTTP_TIMEOUT_S)
                assert ready.status_code == 200, ready.text
                unknown = httpx.post(
                    f"{server.url}/v1/models/nope:predict", json={"instances": [rows[0]]}
                )
                assert unknown.status_code == 404, unknown.text  # not a 500
            assert_cli_names_the_unreachable_registry(cluster)

            running_postgres.start()
            cluster.store.set_alias(MODEL, "production", 2)  # moved after the restart
            probes = sum(wait_for_version(s, rows[0], "2", servers) for s in servers)
            wait_for(
                lambda: all(
                    records(s, REGISTRY_BACK) and records(s, WRITES_RESUMED) for s in servers
                ),
                "recovery lines",
                servers,
            )
            at_recovery = [load.count() for load in during]
            wait_for(
                lambda: all(x.count() >= n + 20 for x, n in zip(during, at_recovery, strict=True)),
                "answers after the restart",
                servers,
            )
        answered = [a for load in during for a in load.answers]
        readiness = [status for load in during for status in load.readiness]

        # zero failed requests on either replica, readiness never dropped
        assert [a for a in answered if a.status != 200] == []
        assert readiness
        assert set(readiness) == {200}
        # after: every acknowledged request is logged exactly once, none lost in the outage
        acknowledged = acknowledged_before + ok(answered) + probes
        wait_for_logged(cluster.log_url, acknowledged, servers)
        assert logged(cluster.log_url) == (acknowledged, acknowledged)
        for server, mark in zip(servers, marks, strict=True):
            assert_outage_reported_once_per_attempt(server, mark, cluster)
            assert metric(server, "mlserve_registry_up") == 1
            assert metric(server, "mlserve_prediction_log_dropped_total") == 0


def assert_cli_names_the_unreachable_registry(cluster: Cluster) -> None:
    """A registry command against the stopped database: exit 8 and one line naming it."""
    result = subprocess.run(
        [MLSERVE, "models", "list"],
        cwd=cluster.folder,
        env=server_environment({"MLSERVE_DATABASE_URL": cluster.registry_url}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 8, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    database = cluster.registry_url.split("://", 1)[1]
    assert f"the registry database postgresql+psycopg://{database} cannot be reached" in lines[0]


def assert_outage_reported_once_per_attempt(
    server: LiveServer, mark: int, cluster: Cluster
) -> None:
    """One line per failed registry read, each naming the database without a traceback, the
    waits between them doubling from the reload interval (capped), then one recovery line."""
    since = server.log_records()[mark:]
    down = [r for r in since if r.get("message") == REGISTRY_DOWN]
    back = [r for r in since if r.get("message") == REGISTRY_BACK]
    assert down
    assert len(back) == 1
    database = cluster.registry_url.split("/")[-1]
    for number, record in enumerate(down, start=1):
        assert record["level"] == "WARNING"
        assert "exception" not in record  # the database failing is not a bug: no traceback
        assert record["database"].endswith(f"/{database}")
        assert "cannot be reached" in record["error"]
        assert record["failed_reads"] == number
        assert record["retry_in_s"] == min(RELOAD_INTERVAL_S * 2 ** (number - 1), RETRY_MOST_S)
    assert back[0]["failed_reads"] == len(down)
    # nothing else complained more than once while the database was away
    complaints = Counter(r["message"] for r in since if r["level"] != "INFO")
    assert {m for m, n in complaints.items() if n > 1} <= {REGISTRY_DOWN, WRITE_FAILED}
    # the writer's retries back off too: each line's wait at least the one before
    waits = [r["retry_in_s"] for r in since if r.get("message") == WRITE_FAILED]
    assert waits == sorted(waits)
    assert len(records(server, WRITES_RESUMED)) == 1


# -- past the prediction log's bound ----------------------------------------------------------------


def send(server: LiveServer, rows: list[list[float]], requests: int) -> list[httpx.Response]:
    """``requests`` one-row /v1 predictions, one after another."""
    with httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT_S) as client:
        return [
            client.post(f"/v1/models/{MODEL}:predict", json={"instances": [rows[i % len(rows)]]})
            for i in range(requests)
        ]


def drained(server: LiveServer) -> bool:
    """True once the writer wrote again and has nothing queued."""
    return bool(records(server, WRITES_RESUMED)) and (
        metric(server, "mlserve_prediction_log_queue_depth") == 0
    )


def statuses(responses: Sequence[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


@pytest.mark.parametrize("when_full", ["drop", "block"])
def test_past_the_bound_an_outage_answers_every_request_and_counts_every_dropped_record(
    cluster: Cluster, running_postgres: PostgresServer, iris_features: pd.DataFrame, when_full: str
) -> None:
    """``block`` paces requests to a slow writer; a writer that cannot write at all would stop
    serving, so past the bound both modes drop and count while the database is down."""
    rows = rows_of(iris_features)
    past_the_bound = 5 * QUEUE_ROWS  # per replica, while the database is down
    with replicas(
        cluster,
        MLSERVE_PREDICTION_LOG_QUEUE_SIZE=str(QUEUE_ROWS),
        MLSERVE_PREDICTION_LOG_WHEN_FULL=when_full,
    ) as servers:
        before = [send(s, rows, 10) for s in servers]
        assert [statuses(r) for r in before] == [{200: 10}, {200: 10}]
        assert logged(cluster.log_url) == (20, 20)

        running_postgres.stop()
        down = [send(s, rows, past_the_bound) for s in servers]
        # every request answered: the log's outage costs records, never answers or readiness
        assert [statuses(r) for r in down] == [{200: past_the_bound}] * 2
        dropped = [metric(s, "mlserve_prediction_log_dropped_total") for s in servers]
        # the queue kept its bound (plus the one batch being retried), the rest was dropped
        assert all(past_the_bound - 2 * QUEUE_ROWS <= d < past_the_bound for d in dropped)
        for server in servers:
            ready = httpx.get(f"{server.url}/v2/health/ready", timeout=HTTP_TIMEOUT_S)
            assert ready.status_code == 200, ready.text

        running_postgres.start()
        wait_for(lambda: all(drained(s) for s in servers), "the buffered records", servers)
        # a request every 0.2 s until each replica says it takes records again (it says so at
        # most once per REPORT_INTERVAL_S, and only when a record comes)
        after = [0, 0]

        def says_it_takes_records_again() -> bool:
            for number, server in enumerate(servers):
                if not records(server, TAKES_AGAIN):
                    assert statuses(send(server, rows, 1)) == {200: 1}
                    after[number] += 1
            time.sleep(0.2)
            return all(records(s, TAKES_AGAIN) for s in servers)

        wait_for(says_it_takes_records_again, "the end of the drops", servers)
        acknowledged = 2 * (10 + past_the_bound) + sum(after)
        written, ids = logged(cluster.log_url)
        assert written == ids  # each written record once
        assert acknowledged == written + sum(dropped)  # acknowledged = written + dropped, exactly
        for server, count_dropped in zip(servers, dropped, strict=True):
            assert metric(server, "mlserve_prediction_log_dropped_total") == count_dropped
            # not silently: said when it started, at most once per interval, and in all
            full = records(server, "prediction log full; dropping records")
            assert len(full) == 1
            assert full[0]["queue_rows"] == QUEUE_ROWS
            again = records(server, TAKES_AGAIN)
            assert [r["dropped"] for r in again] == [count_dropped]
