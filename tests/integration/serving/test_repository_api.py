"""The model repository API (OIP/Triton repository extension): index, load and unload while the
server runs, behind the admin key; a broken version never replaces a working one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_harness import (
    IRIS,
    LiveServer,
    ServingProject,
    launch,
    shutdown,
    v2_matrix_request,
)
from sklearn.pipeline import Pipeline

from mlserve.registry import NewVersion, RegistryStore
from mlserve.runtimes import dump_sklearn
from mlserve.types import Signature

ROW = [5.1, 3.5, 1.4, 0.2]
ADMIN = "admin-secret"
INFERENCE = "inference-secret"


def admin(key: str | None = ADMIN) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keyed_server(
    serving_project: ServingProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """iris (production → v2) served with an inference key and an admin key."""
    server = launch(
        serving_project.root,
        IRIS,
        env={"MLSERVE_API_KEY": INFERENCE, "MLSERVE_ADMIN_API_KEY": ADMIN},
        headers=admin(INFERENCE),
        log_dir=tmp_path_factory.mktemp("repository-logs"),
    )
    try:
        server.wait_ready()
        yield server
    finally:
        shutdown(server)


def post(
    server: LiveServer, path: str, key: str | None = ADMIN, **kwargs: object
) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", headers=admin(key), timeout=60, **kwargs)  # type: ignore[arg-type]  # httpx's keyword types


def test_server_metadata_lists_the_repository_extension(keyed_server: LiveServer) -> None:
    extensions = httpx.get(f"{keyed_server.url}/v2", headers=admin(INFERENCE)).json()["extensions"]
    assert "model_repository" in extensions


@pytest.mark.parametrize(("key", "status"), [(None, 401), (INFERENCE, 403), ("wrong", 403)])
def test_the_repository_api_takes_the_admin_key_only(
    keyed_server: LiveServer, key: str | None, status: int
) -> None:
    for path in ("/v2/repository/index", f"/v2/repository/models/{IRIS}/unload"):
        response = post(keyed_server, path, key=key)
        assert response.status_code == status, response.text
        assert set(response.json()) == {"error"}
    # nothing was unloaded by the refused calls
    ready = httpx.get(f"{keyed_server.url}/v2/models/{IRIS}/ready", headers=admin(INFERENCE))
    assert ready.status_code == 200


def test_index_lists_versions_with_their_state(
    keyed_server: LiveServer, serving_project: ServingProject
) -> None:
    response = post(keyed_server, "/v2/repository/index", json={"ready": True})
    assert response.status_code == 200, response.text
    rows = response.json()
    assert {
        "name": IRIS,
        "version": serving_project.versions[IRIS],
        "state": "READY",
        "reason": "",
    } in rows
    assert all(row["state"] == "READY" for row in rows)


def test_unknown_model_is_404(keyed_server: LiveServer) -> None:
    for action in ("load", "unload"):
        response = post(keyed_server, f"/v2/repository/models/nosuch/{action}")
        assert response.status_code == 404, response.text
        assert "nosuch" in response.json()["error"]


def test_load_a_version_beside_then_unload_it(
    keyed_server: LiveServer, serving_project: ServingProject
) -> None:
    production = serving_project.versions[IRIS]
    other = "1" if production != "1" else "2"
    loaded = post(
        keyed_server, f"/v2/repository/models/{IRIS}/load", json={"parameters": {"version": other}}
    )
    assert loaded.status_code == 200, loaded.text
    url = f"{keyed_server.url}/v2/models/{IRIS}/versions/{other}/infer"
    answer = httpx.post(url, json=v2_matrix_request([ROW]), headers=admin(INFERENCE))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-model-version"] == other
    # the model's name still answers with production
    plain = httpx.post(
        f"{keyed_server.url}/v2/models/{IRIS}/infer",
        json=v2_matrix_request([ROW]),
        headers=admin(INFERENCE),
    )
    assert plain.headers["x-model-version"] == production
    unloaded = post(
        keyed_server,
        f"/v2/repository/models/{IRIS}/unload",
        json={"parameters": {"version": other}},
    )
    assert unloaded.status_code == 200, unloaded.text
    assert unloaded.json() == [
        {"name": IRIS, "version": other, "state": "UNAVAILABLE", "reason": "unloaded"}
    ]
    gone = httpx.post(url, json=v2_matrix_request([ROW]), headers=admin(INFERENCE))
    assert gone.status_code == 404
    assert "registered but this server does not serve it" in gone.json()["error"]
    assert httpx.get(f"{keyed_server.url}/v2/health/ready").status_code == 200


@pytest.fixture(scope="module")
def broken_project(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_classifier: Pipeline,
    iris_signature: Signature,
) -> tuple[Path, str]:
    """A project of its own: iris v1 in production, and v2 whose model file is corrupted on
    disk after registration (so its sha256 no longer matches). Returns (root, "2")."""
    root = tmp_path_factory.mktemp("broken-project")
    home = root / ".mlserve"
    store = RegistryStore(
        f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"), home / "cache"
    )
    try:
        staging = root / "staging"
        staging.mkdir()
        versions = []
        for index in (1, 2):
            path = dump_sklearn(tiny_classifier, staging / f"v{index}.joblib")
            registered = store.register_version(
                IRIS, path, NewVersion(framework="sklearn", signature=iris_signature)
            )
            versions.append(registered)
        store.set_alias(IRIS, "production", versions[0].version)
        broken = versions[1]
        model_file = store.local_folder(broken) / broken.model_file
        model_file.write_bytes(model_file.read_bytes() + b"corrupted")
    finally:
        store.close()
    return root, str(broken.version)


def test_loading_a_broken_version_keeps_the_old_one_serving(
    broken_project: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    root, broken = broken_project
    # Listening on loopback with no admin key: the repository API is open.
    server = launch(root, IRIS, log_dir=tmp_path_factory.mktemp("broken-logs"))
    try:
        server.wait_ready()
        response = post(
            server,
            f"/v2/repository/models/{IRIS}/load",
            key=None,
            json={"parameters": {"version": broken}},
        )
        assert response.status_code == 400, response.text
        assert "integrity" in response.json()["error"] or "sha256" in response.json()["error"]
        index = post(server, "/v2/repository/index", key=None).json()
        assert {row["version"]: row["state"] for row in index} == {
            "1": "READY",
            broken: "UNAVAILABLE",
        }
        assert next(r for r in index if r["version"] == broken)["reason"]
        answer = httpx.post(f"{server.url}/v2/models/{IRIS}/infer", json=v2_matrix_request([ROW]))
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-model-version"] == "1"
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
        metrics = httpx.get(f"{server.url}/metrics").text
        assert f'mlserve_model_loads_total{{model="{IRIS}",result="failed"}} 1.0' in metrics
    finally:
        shutdown(server)


def test_unload_then_load_a_whole_model(
    keyed_server: LiveServer, serving_project: ServingProject
) -> None:
    production = serving_project.versions[IRIS]
    unloaded = post(keyed_server, f"/v2/repository/models/{IRIS}/unload")
    assert unloaded.status_code == 200, unloaded.text
    gone = httpx.post(
        f"{keyed_server.url}/v2/models/{IRIS}/infer",
        json=v2_matrix_request([ROW]),
        headers=admin(INFERENCE),
    )
    assert gone.status_code == 404, gone.text
    assert "load it (POST /v2/repository/models/iris/load" in gone.json()["error"]
    assert httpx.get(f"{keyed_server.url}/v2/health/ready").status_code == 200
    loaded = post(keyed_server, f"/v2/repository/models/{IRIS}/load")
    assert loaded.status_code == 200, loaded.text
    assert [row["version"] for row in loaded.json()] == [production]
    back = httpx.post(
        f"{keyed_server.url}/v2/models/{IRIS}/infer",
        json=v2_matrix_request([ROW]),
        headers=admin(INFERENCE),
    )
    assert back.status_code == 200, back.text
    assert back.headers["x-model-version"] == production
