"""`mlserve build` without a container engine: the build context it writes, and the Dockerfile
(hadolint). The image itself is built and run in tests/integration/deploy/test_image.py."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import xgboost

from mlserve.cli.context import console
from mlserve.cli.main import run
from mlserve.errors import ArtifactError
from mlserve.registry import NewVersion, RegistryStore
from mlserve.runtimes import RUNTIMES, load_runtime
from mlserve.scaffold.image import (
    BuildOptions,
    build_command,
    default_extras,
    dockerfile,
    image_extras,
)
from mlserve.scaffold.kubernetes import LIVE_PATH, MODEL_DIR, READY_PATH, RUN_AS_UID
from mlserve.serving import discover_model_dir

REPO = Path(__file__).resolve().parents[3]
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def hadolint(text: str) -> str:
    """hadolint's findings on a Dockerfile (empty when clean)."""
    binary = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(binary), "-"], input=text, capture_output=True, text=True, check=False
    )
    return result.stdout + result.stderr


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty registry folder; the working folder has no mlserve.yaml and output is wide."""
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("MLSERVE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setattr(console, "width", 300)
    return tmp_path / ".mlserve"


@pytest.fixture
def iris(home: Path, classifier_file: Path, new_version: NewVersion) -> str:
    """Model ``iris`` with versions 1 and 2; ``production`` points at 1."""
    store = RegistryStore(
        f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"), home / "cache"
    )
    try:
        store.register_version("iris", classifier_file, new_version)
        store.register_version("iris", classifier_file, new_version)
        store.set_alias("iris", "production", 1)
    finally:
        store.close()
    return "iris"


def test_build_writes_a_context_serving_the_versions_with_no_database(
    home: Path,
    iris: str,
    tmp_path: Path,
    iris_frame: pd.DataFrame,
    capsys: pytest.CaptureFixture[str],
) -> None:
    context = tmp_path / "context"
    args = ["--home", str(home), "build", "iris@production", "iris:2", "--tag", "iris:1"]
    assert run([*args, "--output", str(context), "--engine", "none"]) == 0
    out = capsys.readouterr().out
    # The generic image's extras (a PostgreSQL registry, S3 artifacts); scikit-learn adds none.
    assert f"docker build --tag iris:1 --build-arg EXTRAS=postgres,s3 {context}" in out
    for name in ("pyproject.toml", "README.md", "requirements.lock", "src/mlserve/__init__.py"):
        assert (context / name).is_file(), name
    assert not list(context.rglob("__pycache__"))
    text = (context / "Dockerfile").read_text(encoding="utf-8")
    assert text.startswith(dockerfile())
    assert text.rstrip().endswith(f'CMD ["serve", "--model-dir={MODEL_DIR}"]')
    assert (context / ".dockerignore").is_file()
    assert hadolint(text) == ""

    # What the image serves is what `mlserve serve --model-dir` finds there, readable by all.
    sources = discover_model_dir(context / "models")
    assert [(s.name, s.version) for s in sources] == [("iris", "1"), ("iris", "2")]
    for path in (context / "models").rglob("*"):
        assert path.stat().st_mode & 0o004, path
    runtime = load_runtime(context / "models" / "iris" / "1")
    assert len(runtime.predict(iris_frame[IRIS_FEATURES])) == len(iris_frame)

    # A second build replaces its own context, but never another folder.
    assert run([*args, "--output", str(context), "--engine", "none"]) == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine", encoding="utf-8")
    assert run([*args, "--output", str(other), "--engine", "none"]) == 7
    assert (other / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_build_refuses_an_unknown_version(home: Path, iris: str, tmp_path: Path) -> None:
    args = ["--home", str(home), "build", "iris:9", "--tag", "t", "--engine", "none"]
    assert run([*args, "--output", str(tmp_path / "c")]) == 3
    assert not (tmp_path / "c").exists()


def test_build_installs_the_extras_of_the_baked_versions_frameworks(
    home: Path,
    iris: str,
    tmp_path: Path,
    iris_frame: pd.DataFrame,
    new_version: NewVersion,
    capsys: pytest.CaptureFixture[str],
) -> None:
    booster = xgboost.XGBClassifier(n_estimators=2, max_depth=2)
    booster.fit(iris_frame[IRIS_FEATURES], iris_frame["species"].astype("category").cat.codes)
    booster.save_model(tmp_path / "boost.json")
    # Registered as `mlserve register boost.json` records it (framework xgboost); building never
    # loads the model, so this host needs no xgboost runtime.
    store = RegistryStore(
        f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"), home / "cache"
    )
    try:
        store.register_version(
            "boost", tmp_path / "boost.json", replace(new_version, framework="xgboost")
        )
    finally:
        store.close()
    context = tmp_path / "context"
    build = ["build", "iris:1", "boost", "iris:2", "--tag", "mixed:1", "--engine", "none"]
    assert run(["--home", str(home), *build, "--output", str(context)]) == 0
    out = capsys.readouterr().out
    command = f"docker build --tag mixed:1 --build-arg EXTRAS=postgres,s3,xgboost {context}"
    assert command in out
    assert hadolint((context / "Dockerfile").read_text(encoding="utf-8")) == ""


def test_image_extras_start_from_the_dockerfiles_default_and_add_each_runtimes_once() -> None:
    assert "ARG EXTRAS=postgres,s3\n" in dockerfile()
    assert default_extras() == ("postgres", "s3")
    assert image_extras([]) == ("postgres", "s3")
    assert image_extras(["sklearn", "python"]) == ("postgres", "s3")
    frameworks = ["onnx", "sklearn", "xgboost", "onnx", "lightgbm", "mlflow"]
    assert image_extras(frameworks) == (
        "postgres", "s3", "onnx", "xgboost", "lightgbm", "mlflow",
    )  # fmt: skip
    for framework, spec in RUNTIMES.items():
        assert spec.extra is None or spec.extra in image_extras([framework])
    with pytest.raises(ArtifactError, match="'caffe'"):
        image_extras(["caffe"])


def test_podman_keeps_the_healthcheck_and_gets_base_ca_and_extras() -> None:
    options = BuildOptions(
        tag="t:1", base="debian:bookworm", ca_bundle=Path("/ca.pem"), extras=("postgres", "onnx")
    )
    assert build_command("podman", Path("/ctx"), options) == [
        "podman",
        "build",
        "--format",
        "docker",
        "--tag",
        "t:1",
        "--build-arg",
        "BASE=debian:bookworm",
        "--build-arg",
        "EXTRAS=postgres,onnx",
        "--secret",
        "id=ca,src=/ca.pem",
        "/ctx",
    ]
    # No extras given: the Dockerfile's own default applies.
    assert "--build-arg" not in build_command("docker", Path("/ctx"), BuildOptions(tag="t"))


def test_the_dockerfile_is_hadolint_clean_and_says_what_the_manifests_assume() -> None:
    assert (REPO / "Dockerfile").read_text(encoding="utf-8") == dockerfile()
    text = dockerfile()
    assert hadolint(text) == ""
    assert f"USER {RUN_AS_UID}:{RUN_AS_UID}" in text
    assert 'ENTRYPOINT ["mlserve"]' in text  # exec form: the server gets SIGTERM itself
    assert READY_PATH in text.split("HEALTHCHECK", 1)[1]
    assert LIVE_PATH not in text
    assert "MLSERVE_PORT=8080" in text
    assert "ARG BASE=" in text
    assert "ARG EXTRAS=" in text.split("AS build", 1)[1].split("RUN", 1)[0]  # the build stage's
