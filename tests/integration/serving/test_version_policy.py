"""Which versions a server serves (issue 14): by default every version an alias of a served model
points at (each answers by its number, the bare name with production); `versions` per model
(`latest N`, `all`, a list) widens that; `mlserve serve --all` also serves models registered
after start-up. Real `mlserve serve` processes, real registry files."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from serving_harness import (
    MLSERVE,
    LiveServer,
    register,
    registry,
    running_server,
    server_environment,
)
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from mlserve.monitoring import describe_features
from mlserve.types import Signature

MODEL = "policy"
FEATURES = ["a", "b", "c", "d"]
GOOD = ("1", "2", "3")
"""Three good versions that disagree on the probe rows; version 4 is corrupted on disk."""
CORRUPTED = "4"
WAIT_S = 60.0
"""Bound on each wait for the server to follow a registry change."""


@dataclass(frozen=True)
class PolicyProject:
    """A project folder with MODEL versions 1-4 (production -> 1, staging -> 2), the probe rows
    and what each good version predicts for them."""

    root: Path
    rows: list[list[float]]
    expected: dict[str, list[int]]
    estimators: dict[str, Any]
    signature: Signature


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> PolicyProject:
    x, y = make_classification(n_samples=400, n_features=4, n_informative=3, n_redundant=0,
                               random_state=5)  # fmt: skip
    frame = pd.DataFrame(x, columns=FEATURES)
    estimators = {
        "1": LogisticRegression().fit(frame, y),
        "2": DecisionTreeClassifier(max_depth=1, random_state=0).fit(frame, y),
        "3": LogisticRegression().fit(frame, 1 - y),  # the opposite answer everywhere
    }
    signature = Signature(
        inputs=describe_features(frame), task="classification", outputs=("predict",),
        classes=("0", "1"), target="y",
    )  # fmt: skip
    rows = frame.head(20)
    expected = {v: [int(p) for p in e.predict(rows)] for v, e in estimators.items()}
    assert expected["1"] != expected["2"] != expected["3"]
    root = tmp_path_factory.mktemp("policy-project")
    with registry(root) as store:
        numbers = [register(store, MODEL, estimators[v], signature, root / "src" / v) for v in GOOD]
        numbers.append(register(store, MODEL, estimators["1"], signature, root / "src" / "4"))
        assert numbers == [*GOOD, CORRUPTED]
        store.set_alias(MODEL, "production", 1)
        store.set_alias(MODEL, "staging", 2)
        corrupted = store.get_version(MODEL, int(CORRUPTED))
        model_file = store.local_folder(corrupted) / corrupted.model_file
    model_file.write_bytes(model_file.read_bytes() + b"corrupted after registration")
    return PolicyProject(root, rows.to_numpy().tolist(), expected, estimators, signature)


def served_versions(client: httpx.Client, name: str = MODEL) -> list[str]:
    """The versions the server says it serves (ready) for ``name``."""
    response = client.get(f"/v2/models/{name}")
    assert response.status_code == 200, response.text
    return list(response.json()["versions"])


def wait_for_versions(server: LiveServer, client: httpx.Client, versions: list[str]) -> None:
    """Poll until the server serves exactly ``versions`` of MODEL."""
    deadline = time.monotonic() + WAIT_S
    while served_versions(client) != versions:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"serves {served_versions(client)}, not {versions}:\n{server.stderr()[-3000:]}"
            )
        time.sleep(0.05)


def check_answers(client: httpx.Client, project: PolicyProject, version: str) -> None:
    """Every probe row, asked of ``version`` by number, gets that version's prediction."""
    body = {
        "inputs": [
            {"name": "input-0", "shape": [len(project.rows), 4], "datatype": "FP64",
             "data": [v for row in project.rows for v in row]}
        ]
    }  # fmt: skip
    response = client.post(f"/v2/models/{MODEL}/versions/{version}/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == version
    assert response.json()["outputs"][0]["data"] == project.expected[version]


def reset_aliases(project: PolicyProject) -> None:
    with registry(project.root) as store:
        store.set_alias(MODEL, "production", 1)
        store.set_alias(MODEL, "staging", 2)


NO_POLLING = {"MLSERVE_RELOAD_INTERVAL_S": "0"}


def test_every_aliased_version_is_served_by_number_and_follows_its_alias(
    project: PolicyProject, tmp_path: Path
) -> None:
    reset_aliases(project)
    with (
        running_server(project.root, MODEL, env=NO_POLLING, log_dir=tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
        registry(project.root) as store,
    ):
        assert served_versions(client) == ["1", "2"]
        for version in ("1", "2"):
            check_answers(client, project, version)
        bare = client.post(f"/v1/models/{MODEL}:predict", json={"instances": project.rows[:1]})
        assert bare.headers["x-model-version"] == "1"

        unserved = client.post(f"/v2/models/{MODEL}/versions/3/infer", json={"inputs": []})
        assert unserved.status_code == 404, unserved.text
        error = unserved.json()["error"]
        assert f"{MODEL}:3 is registered but this server does not serve it" in error
        assert f"mlserve alias set {MODEL} staging 3" in error
        assert "versions: all" in error

        store.set_alias(MODEL, "staging", 3)  # staging moves: 3 is served, 2 retired
        os.kill(server.process.pid, signal.SIGHUP)
        wait_for_versions(server, client, ["1", "3"])
        check_answers(client, project, "3")
        gone = client.post(f"/v2/models/{MODEL}/versions/2/infer", json={"inputs": []})
        assert gone.status_code == 404, gone.text

        store.delete_alias(MODEL, "staging")
        os.kill(server.process.pid, signal.SIGHUP)
        wait_for_versions(server, client, ["1"])
        assert client.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("policy", "served", "failed"),
    [
        ("latest 2", ["1", "2", "3"], ["4"]),  # newest two (3, 4) and the aliased (1, 2)
        ("3", ["1", "2", "3"], []),
        ("all", ["1", "2", "3"], ["4"]),
        ("aliases", ["1", "2"], []),
    ],
)
def test_a_version_policy_widens_what_is_served_and_a_broken_version_does_not_cost_readiness(
    project: PolicyProject, tmp_path: Path, policy: str, served: list[str], failed: list[str]
) -> None:
    reset_aliases(project)
    env = {**NO_POLLING, f"MLSERVE_MODELS__{MODEL.upper()}__VERSIONS": policy}
    with (
        running_server(project.root, MODEL, env=env, log_dir=tmp_path, wait="loaded") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        assert client.get("/v2/health/ready").status_code == 200
        assert served_versions(client) == served
        for version in served:
            check_answers(client, project, version)
        index = client.post("/v2/repository/index", json={}).json()
        states = {entry["version"]: entry for entry in index if entry["name"] == MODEL}
        assert sorted(v for v, e in states.items() if e["state"] == "UNAVAILABLE") == failed
        for version in failed:
            assert "sha256" in states[version]["reason"]


def test_a_bad_version_policy_stops_the_start_with_one_line(
    project: PolicyProject, tmp_path: Path
) -> None:
    env = {f"MLSERVE_MODELS__{MODEL.upper()}__VERSIONS": "newest"}
    with running_server(project.root, MODEL, env=env, log_dir=tmp_path, wait="none") as server:
        assert server.process.wait(60) != 0
        error = server.stderr().strip().splitlines()
    assert len(error) == 1, error
    assert "invalid version policy 'newest'" in error[0]


def test_serve_all_serves_models_registered_after_start_up(
    project: PolicyProject, tmp_path: Path
) -> None:
    empty = tmp_path / "project"
    empty.mkdir()
    env = {"MLSERVE_RELOAD_INTERVAL_S": "0.2"}
    with (
        running_server(empty, "--all", env=env, log_dir=tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
        registry(empty) as store,
    ):
        assert client.get("/v2/models/late").status_code == 404
        register(store, "late", project.estimators["2"], project.signature, tmp_path / "late1")
        server.wait_until("/v2/models/late/ready", lambda r: r.status_code == 200, WAIT_S)
        answer = client.post("/v1/models/late:predict", json={"instances": project.rows})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == project.expected["2"]

        # a later production alias is followed like any other
        register(store, "late", project.estimators["3"], project.signature, tmp_path / "late2")
        store.set_alias("late", "production", 2)
        server.wait_until(
            "/v1/models",
            lambda r: any(m["name"] == "late" and m.get("default") and str(m["version"]) == "2"
                          for m in r.json()["models"]),
            WAIT_S,
        )  # fmt: skip
        answer = client.post("/v1/models/late:predict", json={"instances": project.rows})
        assert answer.json()["predictions"] == project.expected["3"]
        assert client.get("/v2/health/ready").status_code == 200


def test_serve_all_with_a_model_folder_is_refused(tmp_path: Path) -> None:
    with running_server(
        tmp_path, "--all", "--model-dir", str(tmp_path), log_dir=tmp_path, wait="none"
    ) as server:
        assert server.process.wait(60) != 0
        lines = server.stderr().strip().splitlines()
    assert lines == ["error: --all serves the registry; it cannot be combined with --model-dir"]


def test_an_archived_version_stops_being_served_and_a_served_one_cannot_be_deleted(
    project: PolicyProject, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    with registry(root) as store:
        for version in ("1", "2", "3"):
            register(store, "arch", project.estimators[version], project.signature,
                     tmp_path / f"arch{version}")  # fmt: skip
        store.set_alias("arch", "production", 1)
    env = {"MLSERVE_RELOAD_INTERVAL_S": "0.2", "MLSERVE_MODELS__ARCH__VERSIONS": "all"}
    with (
        running_server(root, "arch", env=env, log_dir=tmp_path, wait="loaded") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        assert served_versions(client, "arch") == ["1", "2", "3"]
        archived = run_cli("models", "archive", "arch:2", "--reason", "bad data", cwd=root)
        assert archived.returncode == 0, archived.stderr
        server.wait_until("/v2/models/arch", lambda r: r.json()["versions"] == ["1", "3"], WAIT_S)
        gone = client.post("/v1/models/arch/versions/2:predict", json={"instances": project.rows})
        assert gone.status_code == 404

        refused = run_cli("models", "delete", "arch:1", "--yes", cwd=root)
        assert refused.returncode == 7
        assert "archive it instead" in refused.stderr
        deleted = run_cli("models", "delete", "arch:3", "--yes", cwd=root)
        assert deleted.returncode == 0, deleted.stderr
        server.wait_until("/v2/models/arch", lambda r: r.json()["versions"] == ["1"], WAIT_S)
        assert client.get("/v2/health/ready").status_code == 200

    history = run_cli("models", "history", "arch", cwd=root)
    assert history.returncode == 0, history.stderr
    assert "archive" in history.stdout
    assert "bad data" in history.stdout
    assert "delete" in history.stdout
    unserved = run_cli("alias", "set", "arch", "staging", "2", cwd=root)
    assert unserved.returncode == 3
    assert "(it is archived)" in unserved.stderr


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `mlserve ARGS` in ``cwd``."""
    return subprocess.run(
        [MLSERVE, *args], cwd=cwd, env=server_environment(), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
