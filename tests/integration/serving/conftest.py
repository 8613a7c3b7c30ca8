"""Fixtures for the inference server: projects with real registries, and running servers.

Most tests share ``live_server`` (one `mlserve serve` process for the session, serving every
model's production alias); tests that need other settings start their own with
``serving_harness.running_server``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from serving_harness import (
    CHURN,
    CHURN_FEATURES,
    IRIS,
    PRICE,
    PRICE_FEATURES,
    LiveServer,
    ServingProject,
    open_store,
    running_server,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlserve.registry import NewVersion, RegistryStore
from mlserve.runtimes import dump_sklearn, load_sklearn
from mlserve.training import TrainRequest, train
from mlserve.types import MANIFEST_FILE, Signature, file_sha256


def register_pipeline(
    store: RegistryStore, name: str, estimator: Pipeline, signature: Signature, folder: Path
) -> int:
    """Register a fitted estimator as the next version of ``name``; return its number."""
    folder.mkdir(parents=True, exist_ok=True)
    path = dump_sklearn(estimator, folder / f"{name}.joblib")
    version = store.register_version(
        name, path, NewVersion(framework="sklearn", signature=signature)
    )
    return version.version


def churn_frame(rows: int, seed: int) -> pd.DataFrame:
    """Customers with categorical plan (some missing), region, monthly (some missing), tenure."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "pro", "team"], rows).astype(object)
    plan[rng.choice(rows, max(1, rows // 20), replace=False)] = None
    monthly = rng.uniform(5, 100, rows).round(2)
    monthly[rng.choice(rows, max(1, rows // 25), replace=False)] = np.nan
    return pd.DataFrame(
        {
            "plan": plan,
            "region": rng.choice(["eu", "us", "apac"], rows),
            "monthly": monthly,
            "tenure": rng.integers(1, 60, rows),
        }
    )


def price_frame(rows: int, seed: int) -> pd.DataFrame:
    """Two numeric features of a linear target."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x1": rng.normal(size=rows), "x2": rng.normal(size=rows)})


@pytest.fixture(scope="session")
def serving_project(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_classifier: Pipeline,
    iris_frame: pd.DataFrame,
    iris_signature: Signature,
) -> ServingProject:
    """A project folder whose registry holds iris (v1, v2), churn and price, all in production."""
    root = tmp_path_factory.mktemp("serving-project")
    store = open_store(root)
    try:
        staging = root / "staging"
        register_pipeline(store, IRIS, tiny_classifier, iris_signature, staging / "v1")
        stronger = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(C=10.0))])
        stronger.fit(iris_frame[iris_signature.feature_names], iris_frame["species"])
        iris_version = register_pipeline(store, IRIS, stronger, iris_signature, staging / "v2")
        store.set_alias(IRIS, "production", iris_version)

        churn = churn_frame(120, seed=1)
        churn["churned"] = np.where(
            (churn["monthly"].fillna(50) > 50) & (churn["tenure"] < 30), "yes", "no"
        )
        churn.to_csv(root / "churn.csv", index=False)
        train(store, TrainRequest(data=root / "churn.csv", target="churned", alias="production"))

        price = price_frame(80, seed=2)
        price["y"] = 3 * price["x1"] - 2 * price["x2"] + 0.5
        price.to_csv(root / "price.csv", index=False)
        train(store, TrainRequest(data=root / "price.csv", target="y", alias="production"))

        estimators, versions, folders = {}, {}, {}
        for name in (IRIS, CHURN, PRICE):
            version = store.resolve(f"{name}@production")
            folder = store.local_folder(version)
            estimators[name] = load_sklearn(folder / version.model_file, safe=False)
            versions[name] = str(version.version)
            folders[name] = folder
    finally:
        store.close()
    return ServingProject(
        root=root,
        estimators=estimators,
        versions=versions,
        artifact_folders=folders,
        signatures={
            IRIS: iris_signature.feature_names,
            CHURN: CHURN_FEATURES,
            PRICE: PRICE_FEATURES,
        },
    )


@pytest.fixture(scope="session")
def live_server(
    serving_project: ServingProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """`mlserve serve` with no references (every production alias), shared by the session."""
    with running_server(
        serving_project.root, log_dir=tmp_path_factory.mktemp("live-server-logs")
    ) as server:
        yield server


@pytest.fixture(scope="session")
def iris_rows(iris_frame: pd.DataFrame, iris_signature: Signature) -> pd.DataFrame:
    """The 30 iris feature rows (treat as read-only)."""
    return iris_frame[iris_signature.feature_names].copy()


@pytest.fixture(scope="session")
def churn_rows() -> pd.DataFrame:
    """Fresh churn feature rows with nulls, unseen in training (treat as read-only)."""
    return churn_frame(40, seed=11)


@pytest.fixture(scope="session")
def price_rows() -> pd.DataFrame:
    """Fresh price feature rows (treat as read-only)."""
    return price_frame(25, seed=12)


@pytest.fixture(scope="session")
def tampered_project(
    tmp_path_factory: pytest.TempPathFactory, tiny_classifier: Pipeline, iris_signature: Signature
) -> Path:
    """A project serving ``good`` and ``tampered``, whose model file changed after registration."""
    root = tmp_path_factory.mktemp("tampered-project")
    store = open_store(root)
    try:
        for name in ("good", "tampered"):
            version = register_pipeline(
                store, name, tiny_classifier, iris_signature, root / "staging" / name
            )
            store.set_alias(name, "production", version)
        registered = store.resolve("tampered@production")
    finally:
        store.close()
    model_file = Path(registered.artifact_uri) / registered.model_file
    model_file.write_bytes(model_file.read_bytes() + b"tampered")
    return root


@pytest.fixture(scope="session")
def model_dir(serving_project: ServingProject, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Self-describing version folders: iris/1, iris/2 (copied from the registry) and broken/1.

    broken/1 has a manifest whose sha256 matches its model file, but the file is not a model.
    """
    root = tmp_path_factory.mktemp("model-dir")
    artifacts = serving_project.root / ".mlserve" / "artifacts"
    for version in ("1", "2"):
        shutil.copytree(artifacts / IRIS / version, root / IRIS / version)
    broken = root / "broken" / "1"
    shutil.copytree(artifacts / IRIS / "1", broken)
    manifest = json.loads((broken / MANIFEST_FILE).read_text(encoding="utf-8"))
    model_file = broken / manifest["model_file"]
    model_file.write_bytes(b"this is not a pickle at all")
    manifest.update(name="broken", version=1, sha256=file_sha256(model_file))
    (broken / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    return root
