"""`mlserve k8s` and the manifests `mlserve init` writes, run in-process on a temp folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlserve.cli.context import console
from mlserve.cli.main import run
from mlserve.registry import NewVersion, RegistryStore
from mlserve.scaffold import KUBERNETES_FILES, init_project


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty registry folder; the working folder has no mlserve.yaml and output is wide."""
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("MLSERVE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setattr(console, "width", 200)
    return tmp_path / ".mlserve"


@pytest.fixture
def iris(home: Path, classifier_file: Path, new_version: NewVersion) -> str:
    """Model ``iris`` with one version, aliased ``production``."""
    store = RegistryStore(
        f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"), home / "cache"
    )
    try:
        store.register_version("iris", classifier_file, new_version)
        store.set_alias("iris", "production", 1)
    finally:
        store.close()
    return "iris"


def deployment(folder: Path) -> Any:
    """The Deployment `mlserve k8s` wrote under ``folder``."""
    text = (folder / "deploy/kubernetes/deployment.yaml").read_text(encoding="utf-8")
    found = yaml.safe_load(text)
    assert isinstance(found, dict)
    return found


def test_k8s_writes_every_manifest_serving_the_references(
    home: Path, iris: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--home", str(home), "k8s", "iris@production", "--image", "reg.example/iris:1"]
    assert run([*args, "--name", "iris", "--folder", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    for name in KUBERNETES_FILES:
        assert (tmp_path / "out" / name).is_file()
        assert f"  {name}" in out
    assert "kubectl create secret generic iris-secrets" in out
    container = deployment(tmp_path / "out")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "reg.example/iris:1"
    assert container["args"] == ["serve", "iris@production"]


def test_k8s_refuses_an_unknown_reference_and_overwriting(
    home: Path, iris: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["--home", str(home), "k8s", "irsi", "--folder", str(tmp_path)]) == 3
    assert not (tmp_path / "deploy").exists()
    assert run(["--home", str(home), "k8s", "--folder", str(tmp_path)]) == 0
    capsys.readouterr()
    assert run(["--home", str(home), "k8s", "--folder", str(tmp_path)]) == 7
    assert "--force" in capsys.readouterr().err
    assert run(["--home", str(home), "k8s", "--folder", str(tmp_path), "--force"]) == 0


def test_k8s_takes_the_drain_timeout_from_the_settings(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSERVE_DRAIN_TIMEOUT_S", "100")
    assert run(["--home", str(home), "k8s", "--folder", str(tmp_path)]) == 0
    pod = deployment(tmp_path)["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 100


def test_init_writes_the_manifests_named_after_the_project(tmp_path: Path) -> None:
    result = init_project(tmp_path / "Churn Project")
    assert set(KUBERNETES_FILES) <= set(result.files)
    written = deployment(tmp_path / "Churn Project")
    assert written["metadata"]["name"] == "churn-project"
