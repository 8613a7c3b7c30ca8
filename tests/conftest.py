"""Shared fixtures: a tiny real classifier, its signature, and a registry in a temp database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlserve.monitoring import describe_features
from mlserve.registry import NewVersion, RegistryStore
from mlserve.runtimes import dump_sklearn
from mlserve.types import MANIFEST_FILE, Signature, VersionManifest, file_sha256

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

GRPC_CLIENT_TESTS = Path(__file__).parent / "integration" / "serving" / "test_grpc.py"
"""tritonclient.grpc and kserve each register protobuf messages named ``inference.*`` in the
process's one descriptor pool, so no process can import both: these tests run only when named
on the command line, in a pytest process of their own (`make test` runs both processes)."""


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave GRPC_CLIENT_TESTS out of a run that does not name it."""
    if collection_path != GRPC_CLIENT_TESTS:
        return None
    named = {Path(arg.split("::")[0]).resolve() for arg in config.args}
    return GRPC_CLIENT_TESTS not in named


@pytest.fixture(scope="session")
def iris_frame() -> pd.DataFrame:
    """30 iris rows (10 per species) with snake_case feature columns and a ``species`` target."""
    iris = load_iris(as_frame=True)
    frame = iris.frame.set_axis([*IRIS_FEATURES, "target"], axis=1)
    frame["species"] = [str(iris.target_names[t]) for t in frame.pop("target")]
    sample = frame.groupby("species", group_keys=False).head(10).reset_index(drop=True)
    return sample.copy()


@pytest.fixture(scope="session")
def iris_features(iris_frame: pd.DataFrame) -> pd.DataFrame:
    """The feature columns of ``iris_frame`` (treat as read-only)."""
    return iris_frame[IRIS_FEATURES].copy()


@pytest.fixture(scope="session")
def tiny_classifier(iris_frame: pd.DataFrame) -> Pipeline:
    """StandardScaler + LogisticRegression fitted on ``iris_frame`` (treat as read-only)."""
    model = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression())])
    return model.fit(iris_frame[IRIS_FEATURES], iris_frame["species"])


@pytest.fixture(scope="session")
def iris_signature(iris_frame: pd.DataFrame, tiny_classifier: Pipeline) -> Signature:
    """The signature of ``tiny_classifier``."""
    return Signature(
        inputs=describe_features(iris_frame[IRIS_FEATURES]),
        task="classification",
        outputs=("predict", "predict_proba"),
        classes=tuple(str(c) for c in tiny_classifier.classes_),
        target="species",
    )


@pytest.fixture
def classifier_file(tmp_path: Path, tiny_classifier: Pipeline) -> Path:
    """``tiny_classifier`` saved with joblib as ``model.joblib`` in a fresh folder."""
    folder = tmp_path / "trained"
    folder.mkdir()
    return dump_sklearn(tiny_classifier, folder / "model.joblib")


@pytest.fixture
def new_version(iris_signature: Signature) -> NewVersion:
    """Registration details for ``classifier_file``."""
    return NewVersion(
        framework="sklearn",
        signature=iris_signature,
        metrics={"accuracy": 0.9},
        params={"C": 1.0},
        tags={"team": "risk"},
        description="iris baseline",
    )


@pytest.fixture
def version_folder(tmp_path: Path, tiny_classifier: Pipeline, iris_signature: Signature) -> Path:
    """A self-describing version folder (model file + ``mlserve.json``) built without a registry."""
    folder = tmp_path / "iris" / "1"
    folder.mkdir(parents=True)
    model_path = dump_sklearn(tiny_classifier, folder / "model.joblib")
    manifest = VersionManifest(
        name="iris",
        version=1,
        framework="sklearn",
        model_file=model_path.name,
        sha256=file_sha256(model_path),
        signature=iris_signature,
        created_at="2026-01-01T00:00:00+00:00",
    )
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict()), encoding="utf-8")
    return folder


@pytest.fixture
def registry_store(tmp_path: Path) -> Iterator[RegistryStore]:
    """A RegistryStore on a SQLite file in ``tmp_path`` with local artifacts; closed after."""
    store = RegistryStore(
        f"sqlite:///{tmp_path / 'registry.db'}",
        str(tmp_path / "artifacts"),
        tmp_path / "cache",
    )
    yield store
    store.close()
