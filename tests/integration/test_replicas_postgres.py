"""Replicas that agree (issue 17): two `mlserve serve` processes on one PostgreSQL registry and one
PostgreSQL prediction log converge on the version an alias names, log under distinct request
ids, join feedback sent to either replica with predictions made by the other, and compute
online accuracy and drift over both replicas' logs.

The server comes from ``postgres_url`` in tests/integration/conftest.py; each test gets fresh
databases on it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from itertools import count
from pathlib import Path

import httpx
import pandas as pd
import pytest
from serving_harness import LiveServer, running_server
from sqlalchemy import create_engine, make_url, text

from mlserve.monitoring import build_reference_profile
from mlserve.monitoring.predlog_store import PredictionLogStore
from mlserve.registry import NewVersion, RegistryStore

MODEL = "iris"
RELOAD_INTERVAL_S = 0.5
CONVERGE_TIMEOUT_S = 30.0
LOG_TIMEOUT_S = 30.0

_numbers = count()


@pytest.fixture
def databases(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A fresh registry database and a fresh prediction-log database; dropped afterwards."""
    names = [f"replicas_registry_{next(_numbers)}", f"replicas_log_{next(_numbers)}"]
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            for name in names:
                connection.execute(text(f"CREATE DATABASE {name}"))
        base = make_url(postgres_url)
        yield (
            base.set(database=names[0]).render_as_string(hide_password=False),
            base.set(database=names[1]).render_as_string(hide_password=False),
        )
        with admin.connect() as connection:
            for name in names:
                connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    finally:
        admin.dispose()


def rows_of(features: pd.DataFrame) -> list[list[float]]:
    return features.head(10).to_numpy().tolist()


def answered_version(server: LiveServer, row: list[float]) -> str:
    response = httpx.post(
        f"{server.url}/v1/models/{MODEL}:predict", json={"instances": [row]}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.headers["x-model-version"]


def test_two_replicas_converge_log_apart_and_join_each_others_feedback(
    tmp_path: Path,
    databases: tuple[str, str],
    classifier_file: Path,
    new_version: NewVersion,
    iris_features: pd.DataFrame,
) -> None:
    registry_url, log_url = databases
    artifacts, cache = tmp_path / "artifacts", tmp_path / "cache"
    store = RegistryStore(registry_url, str(artifacts), cache)
    env = {
        "MLSERVE_DATABASE_URL": registry_url,
        "MLSERVE_ARTIFACT_ROOT": str(artifacts),
        "MLSERVE_PREDICTION_LOG_URL": log_url,
        "MLSERVE_RELOAD_INTERVAL_S": str(RELOAD_INTERVAL_S),
        "MLSERVE_ACCESS_LOG": "false",
    }
    rows = rows_of(iris_features)
    try:
        profiled = replace(new_version, reference_profile=build_reference_profile(iris_features))
        for _ in range(2):
            store.register_version(MODEL, classifier_file, profiled)
        store.set_alias(MODEL, "production", 1)
        homes = [tmp_path / "a", tmp_path / "b"]  # each replica its own working folder
        for home in homes:
            home.mkdir()
        with (
            running_server(homes[0], MODEL, env=env, log_dir=tmp_path) as first,
            running_server(homes[1], MODEL, env=env, log_dir=tmp_path) as second,
        ):
            replicas = (first, second)
            assert [answered_version(s, rows[0]) for s in replicas] == ["1", "1"]

            # an alias move reaches both within the reload interval (bounded wait, no restart)
            store.set_alias(MODEL, "production", 2)
            for server in replicas:
                deadline = time.monotonic() + CONVERGE_TIMEOUT_S
                while answered_version(server, rows[0]) != "2":
                    assert time.monotonic() < deadline, server.stderr()[-3000:]
                    time.sleep(0.1)

            # predictions on A, feedback for them sent to B (and the other way round)
            sent: dict[str, list[tuple[str, str]]] = {}
            with (
                httpx.Client(base_url=first.url, timeout=30) as a,
                httpx.Client(base_url=second.url, timeout=30) as b,
            ):
                for name, client in (("a", a), ("b", b)):
                    for row in rows:
                        response = client.post(
                            f"/v1/models/{MODEL}:predict", json={"instances": [row]}
                        )
                        assert response.status_code == 200, response.text
                        prediction = str(response.json()["predictions"][0])
                        sent.setdefault(name, []).append(
                            (response.headers["x-request-id"], prediction)
                        )
                ids = [request_id for pairs in sent.values() for request_id, _ in pairs]
                assert len(set(ids)) == len(ids) == 2 * len(rows)
                wait_for_logged(log_url, set(ids))
                for name, client in (("a", b), ("b", a)):  # each batch to the other replica
                    feedback = {
                        "request_ids": [request_id for request_id, _ in sent[name]],
                        "labels": [label for _, label in sent[name]],
                    }
                    joined = client.post(f"/v1/models/{MODEL}/feedback", json=feedback)
                    assert joined.status_code == 200, joined.text
                    assert joined.json() == {"joined": len(rows), "unknown": []}

                # online accuracy and drift are computed over every replica's logs, on either
                for client in (a, b):
                    scores = client.get(f"/v1/models/{MODEL}/monitoring").json()["versions"]["2"]
                    assert scores["labelled_rows"] == 2 * len(rows)
                    assert scores["accuracy"] == 1.0  # the labels are the predictions
                    drift = client.get(f"/v1/models/{MODEL}/drift", params={"window": "1h"})
                    assert drift.status_code == 200, drift.text
                    assert drift.json()["window_rows"] == logged_rows(log_url)  # A's and B's
    finally:
        store.close()


def wait_for_logged(log_url: str, ids: set[str]) -> None:
    """Until every request id is in the shared prediction log (written off the hot path)."""
    log = PredictionLogStore(log_url)
    try:
        deadline = time.monotonic() + LOG_TIMEOUT_S
        while True:
            logged = set(log.export(MODEL, "2", None, None)["request_id"])
            if ids <= logged:
                return
            assert time.monotonic() < deadline, f"{len(ids - logged)} requests not logged"
            time.sleep(0.2)
    finally:
        log.close()


def logged_rows(log_url: str) -> int:
    """Rows of version 2 in the shared prediction log, whichever replica answered them."""
    log = PredictionLogStore(log_url)
    try:
        return len(log.export(MODEL, "2", None, None))
    finally:
        log.close()
