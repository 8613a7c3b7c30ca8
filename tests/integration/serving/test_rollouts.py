"""Rollouts in a running server (issue 15): canary weights, sticky keys across worker processes,
explicit choice, shadow traffic that never changes an answer, and the guardrail that rolls a
failing candidate back while clients see no error. Real `mlserve serve` processes, a real
registry, real clients; load is bounded by request counts."""

from __future__ import annotations

import math
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import (
    MLSERVE,
    LiveServer,
    register,
    registry,
    running_server,
    server_environment,
    wait_for_every_worker,
)
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from steady_load import SteadyLoad

from mlserve.monitoring import describe_features
from mlserve.monitoring.predlog_store import PredictionLogStore
from mlserve.registry import RolloutLimits
from mlserve.types import Signature

MODEL = "rolled"
FEATURES = ["a", "b", "c"]
PRODUCTION, CANDIDATE, FRAGILE = 1, 2, 3
"""Production and a good candidate that disagree on many rows; a candidate that refuses every
row with a negative `a` (a square root, then NaN into a linear model)."""
FOLLOW = {"MLSERVE_RELOAD_INTERVAL_S": "0.2"}
WAIT_S = 60.0


@dataclass(frozen=True)
class RolloutProject:
    root: Path
    rows: list[list[float]]
    expected: dict[int, list[int]]
    """Version -> its prediction for each probe row (FRAGILE: rows with a >= 0 only)."""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> RolloutProject:
    x, y = make_classification(n_samples=600, n_features=3, n_informative=3, n_redundant=0,
                               random_state=11)  # fmt: skip
    frame = pd.DataFrame(x, columns=FEATURES)
    estimators = {
        PRODUCTION: LogisticRegression().fit(frame, y),
        CANDIDATE: LogisticRegression().fit(frame, 1 - y),  # disagrees everywhere
        FRAGILE: Pipeline([
            ("root", ColumnTransformer([("a", FunctionTransformer(np.sqrt), ["a"])],
                                       remainder="passthrough")),
            ("classify", LogisticRegression()),
        ]).fit(frame.assign(a=frame["a"].abs()), y),
    }  # fmt: skip
    signature = Signature(
        inputs=describe_features(frame), task="classification", outputs=("predict",),
        classes=("0", "1"), target="y",
    )  # fmt: skip
    rows = frame.head(40)
    expected = {
        v: [int(p) for p in e.predict(rows.assign(a=rows["a"].abs()) if v == FRAGILE else rows)]
        for v, e in estimators.items()
    }
    root = tmp_path_factory.mktemp("rollout-project")
    with registry(root) as store:
        for number, estimator in estimators.items():
            folder = root / "src" / str(number)
            assert register(store, MODEL, estimator, signature, folder) == str(number)
        store.set_alias(MODEL, "production", PRODUCTION)
    assert (np.asarray(rows["a"]) < 0).sum() >= 10, "the fragile candidate must fail on many rows"
    return RolloutProject(root, rows.to_numpy().tolist(), expected)


@pytest.fixture
def fresh(project: RolloutProject) -> RolloutProject:
    """production -> 1 and no active rollout, whatever the previous test left."""
    with registry(project.root) as store:
        store.set_alias(MODEL, "production", PRODUCTION)
        if store.rollout(MODEL) is not None:
            store.rollback_rollout(MODEL, "test reset")
    return project


def predict(
    client: httpx.Client, row: list[float], headers: dict[str, str] | None = None
) -> httpx.Response:
    return client.post(f"/v1/models/{MODEL}:predict", json={"instances": [row]}, headers=headers)


def metric(server: LiveServer, name: str, **labels: str) -> float:
    """The sum of a metric's samples matching ``labels``."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def wait_for_metric(server: LiveServer, name: str, minimum: float, **labels: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while metric(server, name, **labels) < minimum:
        assert time.monotonic() < deadline, (
            f"{name}{labels} < {minimum}:\n{server.stderr()[-3000:]}"
        )
        time.sleep(0.1)


def wait_for_weight(server: LiveServer, canary: float) -> None:
    """Until the server applies a rollout giving the candidate ``canary`` %."""
    deadline = time.monotonic() + WAIT_S
    labels = {"model": MODEL, "kind": "canary"}
    while metric(server, "mlserve_rollout_weight_percent", **labels) != canary:
        assert time.monotonic() < deadline, server.stderr()[-3000:]
        time.sleep(0.05)


def logged_routes(
    project: RolloutProject, server: LiveServer, requests: int, since: datetime
) -> Counter[tuple[str, str]]:
    """(version, route) of each request of MODEL logged since ``since``, once ``requests`` are
    logged (the server's writer works behind the answers)."""
    store = PredictionLogStore(f"sqlite:///{project.root / '.mlserve' / 'predictions.db'}")
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            records = [r for r in store.read_records(MODEL, since=since) if r.row == 0]
            if len(records) >= requests or time.monotonic() > deadline:
                return Counter((r.version, r.route) for r in records)
            time.sleep(0.1)
    finally:
        store.close()


def versions_of(responses: list[httpx.Response]) -> Counter[str]:
    for response in responses:
        assert response.status_code == 200, response.text
    return Counter(r.headers["x-model-version"] for r in responses)


def check_predictions(project: RolloutProject, rows: list[int], answers: list[Any]) -> None:
    """Every answer is the prediction of the version its header names."""
    for row, response in zip(rows, answers, strict=True):
        version = int(response.headers["x-model-version"])
        assert response.json()["predictions"] == [project.expected[version][row]], (row, version)


def test_canary_weights_land_within_binomial_bounds_and_explicit_choice_works(
    fresh: RolloutProject, tmp_path: Path
) -> None:
    with (
        running_server(fresh.root, MODEL, env=FOLLOW, log_dir=tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
        registry(fresh.root) as store,
    ):
        since = datetime.now(UTC)
        store.start_rollout(MODEL, CANDIDATE, canary=30)
        wait_for_weight(server, 30)
        rows = [i % len(fresh.rows) for i in range(600)]
        answers = [predict(client, fresh.rows[r]) for r in rows]
        counts = versions_of(answers)
        check_predictions(fresh, rows, answers)
        n, p = len(rows), 0.3
        assert abs(counts[str(CANDIDATE)] - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)), counts

        explicit = predict(client, fresh.rows[0], {"x-model-version": str(CANDIDATE)})
        assert explicit.headers["x-model-version"] == str(CANDIDATE)
        assert explicit.json()["predictions"] == [fresh.expected[CANDIDATE][0]]
        unknown = predict(client, fresh.rows[0], {"x-model-version": "99"})
        assert unknown.status_code == 404, unknown.text
        routes = logged_routes(fresh, server, len(rows) + 1, since)
        assert routes == {
            ("1", "production"): counts["1"],
            ("2", "canary"): counts["2"],
            ("2", "explicit"): 1,
        }, routes

        # feedback labels (production's answers as the truth): each version's online accuracy
        feedback = {
            "request_ids": [a.headers["x-request-id"] for a in answers],
            "labels": [fresh.expected[PRODUCTION][r] for r in rows],
        }
        joined = client.post(f"/v1/models/{MODEL}/feedback", json=feedback)
        assert joined.json()["joined"] == len(rows), joined.text
        on_candidate = [r for r, a in zip(rows, answers, strict=True) if a.headers["x-model-version"] == str(CANDIDATE)]  # fmt: skip
        agree = sum(
            fresh.expected[CANDIDATE][r] == fresh.expected[PRODUCTION][r] for r in on_candidate
        )
        status = subprocess.run(
            [MLSERVE, "rollout", "status", MODEL, "--server", server.url],
            cwd=fresh.root, env=server_environment({"COLUMNS": "200"}), capture_output=True,
            text=True, check=True,
        )  # fmt: skip
        assert f"accuracy 1.000 ({counts[str(PRODUCTION)]} labelled)" in status.stdout
        assert (
            f"accuracy {agree / len(on_candidate):.3f} ({len(on_candidate)} labelled)"
            in status.stdout
        )

        exported = tmp_path / "explicit.csv"
        subprocess.run(
            [MLSERVE, "log", "export", f"{MODEL}:{CANDIDATE}", "--route", "explicit", "-o", str(exported)],
            cwd=fresh.root, env=server_environment(), capture_output=True, text=True, check=True,
        )  # fmt: skip
        explicit_rows = pd.read_csv(exported)
        assert explicit_rows["route"].tolist() == ["explicit"]
        assert explicit_rows["request_id"].tolist() == [explicit.headers["x-request-id"]]
        wrong = subprocess.run(
            [MLSERVE, "log", "export", MODEL, "--route", "nosuch", "-o", str(exported)],
            cwd=fresh.root, env=server_environment(), capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert wrong.returncode != 0
        assert wrong.stderr.strip().count("\n") == 0, wrong.stderr
        assert "unknown route 'nosuch'" in wrong.stderr

        store.update_rollout(MODEL, canary=100)
        wait_for_weight(server, 100)
        assert versions_of([predict(client, fresh.rows[i]) for i in range(30)]) == {"2": 30}
        store.rollback_rollout(MODEL, "done")
        wait_for_weight(server, 0)
        assert versions_of([predict(client, fresh.rows[i]) for i in range(30)]) == {"1": 30}


def test_a_sticky_key_always_reaches_one_version_across_two_workers(
    fresh: RolloutProject, tmp_path: Path
) -> None:
    env = {**FOLLOW}
    with registry(fresh.root) as store:
        store.start_rollout(MODEL, CANDIDATE, canary=50, sticky_header="X-User")
    with running_server(
        fresh.root, MODEL, "--workers", "2", env=env, log_dir=tmp_path, wait="none"
    ) as server:
        wait_for_every_worker(server)
        seen: dict[str, set[str]] = {}
        with httpx.Client(
            base_url=server.url, timeout=30, headers={"connection": "close"}
        ) as client:
            for round_ in range(4):
                for user in range(40):
                    row = fresh.rows[(user + round_) % len(fresh.rows)]
                    response = predict(client, row, {"x-user": f"user-{user}"})
                    assert response.status_code == 200, response.text
                    seen.setdefault(f"user-{user}", set()).add(response.headers["x-model-version"])
        assert all(len(versions) == 1 for versions in seen.values()), seen
        both = Counter(next(iter(v)) for v in seen.values())
        assert set(both) == {str(PRODUCTION), str(CANDIDATE)}, both


def test_shadow_traffic_never_changes_an_answer_and_its_failures_stay_inside(
    fresh: RolloutProject, tmp_path: Path
) -> None:
    with (
        running_server(fresh.root, MODEL, env=FOLLOW, log_dir=tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
        registry(fresh.root) as store,
    ):
        since = datetime.now(UTC)
        store.start_rollout(MODEL, FRAGILE, shadow=100)
        wait_for_metric(server, "mlserve_rollout_weight_percent", 100, model=MODEL, kind="shadow")
        rows = [i % len(fresh.rows) for i in range(200)]
        answers = [predict(client, fresh.rows[r]) for r in rows]
        assert versions_of(answers) == {str(PRODUCTION): len(rows)}
        check_predictions(fresh, rows, answers)
        labels = {"model": MODEL, "version": str(FRAGILE)}
        wait_for_metric(server, "mlserve_shadow_requests_total", len(rows), **labels)
        negative = sum(1 for r in rows if fresh.rows[r][0] < 0)
        results = {
            result: metric(server, "mlserve_shadow_requests_total", result=result, **labels)
            for result in ("compared", "failed", "dropped")
        }
        # the shadow costs more than production: some mirrored requests are dropped, counted
        assert sum(results.values()) == len(rows), results
        assert 0 < results["failed"] <= negative, results
        assert 0 < results["compared"] <= len(rows) - negative, results
        agree = metric(server, "mlserve_shadow_rows_total", agreement="agree", **labels)
        disagree = metric(server, "mlserve_shadow_rows_total", agreement="disagree", **labels)
        assert agree + disagree == results["compared"]
        status = subprocess.run(
            [MLSERVE, "rollout", "status", MODEL, "--server", server.url],
            cwd=fresh.root, env=server_environment(), capture_output=True, text=True, check=True,
        )  # fmt: skip
        compared = f"{results['compared']:.0f} compared"
        assert f"shadow (version {FRAGILE}, mirrored requests): {compared}" in status.stdout
        assert f"agreement {agree / results['compared']:.1%}" in status.stdout
        routes = logged_routes(fresh, server, len(rows) + int(results["compared"]), since)
        assert routes == {
            ("1", "production"): len(rows),
            ("3", "shadow"): results["compared"],
        }, routes
        store.rollback_rollout(MODEL, "done")


def test_a_failing_candidate_is_rolled_back_and_clients_never_see_its_errors(
    fresh: RolloutProject, tmp_path: Path
) -> None:
    limits = RolloutLimits(max_error_rate=0.05, window_s=120, min_requests=20)
    with (
        running_server(fresh.root, MODEL, env=FOLLOW, log_dir=tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
        registry(fresh.root) as store,
    ):
        since = datetime.now(UTC)
        started = store.start_rollout(MODEL, FRAGILE, canary=50, limits=limits)
        wait_for_weight(server, 50)
        answers, rows = [], []
        deadline = time.monotonic() + WAIT_S
        while store.rollout(MODEL) is not None:
            assert time.monotonic() < deadline, server.stderr()[-3000:]
            row = len(rows) % len(fresh.rows)
            rows.append(row)
            answers.append(predict(client, fresh.rows[row]))
        # every answer is a 200 with the prediction of the version that gave it
        counts = versions_of(answers)
        check_predictions(fresh, rows, answers)
        assert counts[str(PRODUCTION)] > 0
        history = store.rollout_history(MODEL)
        ended = [e for e in history if e.rollout_id == started.id and e.action == "rollback"]
        assert len(ended) == 1, history
        assert "error rate" in ended[0].detail
        assert "guardrail" in ended[0].actor
        assert metric(server, "mlserve_rollout_rollbacks_total", model=MODEL) == 1
        routes = logged_routes(fresh, server, len(rows), since)
        assert set(routes) <= {("1", "production"), ("1", "fallback"), ("3", "canary")}, routes
        assert routes[("1", "fallback")] > 0, routes
        assert sum(routes.values()) == len(rows)
        wait_for_weight(server, 0)
        after = [predict(client, fresh.rows[i]) for i in range(20)]
        assert versions_of(after) == {str(PRODUCTION): 20}


def test_rollback_and_promote_under_load_give_no_error(
    fresh: RolloutProject, tmp_path: Path
) -> None:
    with (
        running_server(fresh.root, MODEL, env=FOLLOW, log_dir=tmp_path) as server,
        registry(fresh.root) as store,
    ):
        with SteadyLoad(server.url, MODEL, fresh.rows, FEATURES, threads=4) as load:
            store.start_rollout(MODEL, CANDIDATE, canary=30, shadow=50)
            wait_for_weight(server, 30)
            wait_until_answers(load, 200)
            store.rollback_rollout(MODEL, "under load")
            wait_for_weight(server, 0)
            store.start_rollout(MODEL, CANDIDATE, canary=50)
            wait_for_weight(server, 50)
            wait_until_answers(load, 200)
            store.promote_rollout(MODEL)
            wait_for_weight(server, 0)
            wait_until_answers(load, 200)
        assert load.answers, "the load sent nothing"
        failed = [a for a in load.answers if a.status != 200]
        assert failed == [], failed[:5]
        for answer in load.answers:
            version = int(answer.version or 0)
            assert answer.prediction == str(fresh.expected[version][answer.row]), answer
        assert store.resolve(MODEL).version == CANDIDATE
        assert {a.version for a in load.answers[-20:]} == {str(CANDIDATE)}
        assert all(status == 200 for status in load.readiness)


def wait_until_answers(load: SteadyLoad, more: int) -> None:
    """Until the load got ``more`` answers beyond what it has now (bounded)."""
    target = load.count() + more
    deadline = time.monotonic() + WAIT_S
    while load.count() < target:
        assert time.monotonic() < deadline, "the load stalled"
        time.sleep(0.02)
