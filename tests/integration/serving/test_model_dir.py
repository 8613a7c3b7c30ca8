"""`mlserve serve --model-dir DIR`: self-describing version folders, no database."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_harness import (
    IRIS,
    MLSERVE,
    LiveServer,
    ServingProject,
    running_server,
    server_environment,
    v2_matrix_request,
)

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture(scope="module")
def empty_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with no registry and no settings."""
    return tmp_path_factory.mktemp("no-registry")


@pytest.fixture(scope="module")
def model_dir_server(model_dir: Path, empty_project: Path) -> Iterator[LiveServer]:
    """A server of iris/1, iris/2 and broken/1 from a folder, run where no registry exists."""
    with running_server(empty_project, "--model-dir", str(model_dir), wait="loaded") as server:
        yield server


def test_serves_every_version_folder_without_a_database(
    model_dir_server: LiveServer, empty_project: Path
) -> None:
    models = httpx.get(f"{model_dir_server.url}/v1/models").json()["models"]
    assert {(m["name"], m["version"], m["state"]) for m in models} == {
        (IRIS, "1", "ready"),
        (IRIS, "2", "ready"),
        ("broken", "1", "failed"),
    }
    home = empty_project / ".mlserve"
    assert not (home / "registry.db").exists()  # no registry was created or read
    assert {p.name.split("-")[0] for p in home.iterdir()} == {"predictions.db"}  # only the log


def test_newest_version_answers_by_default(
    model_dir_server: LiveServer, serving_project: ServingProject
) -> None:
    meta = httpx.get(f"{model_dir_server.url}/v2/models/{IRIS}").json()
    assert meta["versions"] == ["1", "2"]
    assert meta["parameters"]["version"] == "2"
    response = httpx.post(
        f"{model_dir_server.url}/v2/models/{IRIS}/infer", json=v2_matrix_request(ROWS)
    )
    assert response.status_code == 200
    assert response.headers["x-model-version"] == "2"
    assert response.json()["model_version"] == "2"
    assert response.json()["outputs"][0]["data"] == serving_project.predict(IRIS, ROWS).tolist()


@pytest.mark.parametrize("version", ["1", "2"])
def test_each_version_is_addressable(model_dir_server: LiveServer, version: str) -> None:
    url = f"{model_dir_server.url}/v2/models/{IRIS}/versions/{version}"
    assert httpx.get(f"{url}/ready").status_code == 200
    response = httpx.post(f"{url}/infer", json=v2_matrix_request(ROWS))
    assert response.status_code == 200
    assert response.json()["model_version"] == version
    v1 = httpx.post(
        f"{model_dir_server.url}/v1/models/{IRIS}/versions/{version}:predict",
        json={"instances": ROWS},
    )
    assert v1.json()["model_version"] == version


def test_corrupt_model_file_is_reported_not_fatal(model_dir_server: LiveServer) -> None:
    url = model_dir_server.url
    meta = httpx.get(f"{url}/v2/models/broken").json()
    assert meta["parameters"]["state"] == "failed"
    assert "cannot load" in meta["parameters"]["reason"]
    assert httpx.get(f"{url}/v2/health/ready").status_code == 503
    assert httpx.get(f"{url}/v2/models/broken/ready").status_code == 503
    infer = httpx.post(f"{url}/v2/models/broken/infer", json=v2_matrix_request(ROWS))
    assert infer.status_code == 503
    assert "cannot load" in infer.json()["error"]
    record = model_dir_server.wait_for_log(
        lambda r: r.get("message") == "model failed to load" and r.get("model") == "broken"
    )
    assert "cannot load" in record["reason"]


def test_an_empty_model_dir_stops_the_start(empty_project: Path, tmp_path: Path) -> None:
    completed = subprocess.run(
        [MLSERVE, "serve", "--model-dir", str(tmp_path), "--port", "9"],
        cwd=empty_project,
        env=server_environment(),
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert completed.returncode == 3  # NotFound
    assert "mlserve.json" in " ".join(completed.stderr.decode().split())
