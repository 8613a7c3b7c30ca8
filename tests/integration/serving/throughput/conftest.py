"""Fixtures for the throughput tests: a deliberately slow model, and servers tuned to overload.

The slow model is a real random forest: hundreds of trees make every predict call take
milliseconds whatever its size, so a flood of requests builds a queue on any machine. It lives
in a registry of its own; the fitted object kept here gives the unbatched answers.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from serving_harness import (
    CHURN,
    IRIS,
    PRICE,
    LiveServer,
    ServingProject,
    running_server,
    wait_for_every_worker,
)
from sklearn.ensemble import RandomForestRegressor
from throughput_harness import (
    FOREST,
    FOREST_TREES,
    FrameMaker,
    Reference,
    SlowProject,
    churn_like_frame,
    forest_frame,
    numeric_frame,
)

from mlserve.monitoring import describe_features
from mlserve.registry import NewVersion, RegistryStore
from mlserve.runtimes import dump_sklearn
from mlserve.types import Signature


@pytest.fixture(scope="session")
def slow_project(tmp_path_factory: pytest.TempPathFactory) -> SlowProject:
    """A registry with a 400-tree random forest regressor as ``forest@production``."""
    root = tmp_path_factory.mktemp("slow-project")
    home = root / ".mlserve"
    rng = np.random.default_rng(3)
    frame = forest_frame(rng, 200)
    target = 3 * frame["x1"] - 2 * frame["x2"] + rng.normal(scale=0.1, size=len(frame))
    forest = RandomForestRegressor(n_estimators=FOREST_TREES, max_depth=6, random_state=0)
    forest.fit(frame.to_numpy(), target.to_numpy())  # arrays: no feature-name checks
    (root / "staging").mkdir()
    path = dump_sklearn(forest, root / "staging" / "forest.joblib")
    signature = Signature(inputs=describe_features(frame), task="regression", target="y")
    store = RegistryStore(
        f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"), home / "cache"
    )
    try:
        version = store.register_version(
            FOREST, path, NewVersion(framework="sklearn", signature=signature)
        )
        store.set_alias(FOREST, "production", version.version)
    finally:
        store.close()
    return SlowProject(root, forest, str(version.version))


@pytest.fixture(scope="session")
def project_reference(serving_project: ServingProject) -> Reference:
    """Unbatched predictions of the shared project's production versions."""
    classes = {
        name: [str(c) for c in getattr(estimator, "classes_", [])]
        for name, estimator in serving_project.estimators.items()
    }
    return Reference(
        serving_project.predict, serving_project.predict_proba, serving_project.versions, classes
    )


@pytest.fixture(scope="session")
def project_frames() -> dict[str, FrameMaker]:
    """Row makers for the shared project's models, in signature order."""
    return {
        IRIS: numeric_frame(
            ["sepal_length", "sepal_width", "petal_length", "petal_width"], 0.1, 8.0
        ),
        CHURN: churn_like_frame,
        PRICE: numeric_frame(["x1", "x2"], -3.0, 3.0),
    }


@pytest.fixture(scope="module")
def overload_server(
    slow_project: SlowProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The forest with a queue of at most 8 rows, batches of at most 4, one inference thread."""
    env = {
        "MLSERVE_MAX_QUEUE_ROWS": "8",
        "MLSERVE_MAX_BATCH_SIZE": "4",
        "MLSERVE_INFERENCE_WORKERS": "1",
    }
    with running_server(
        slow_project.root, FOREST, env=env, log_dir=tmp_path_factory.mktemp("overload-logs")
    ) as server:
        yield server


@pytest.fixture(scope="module")
def deadline_server(
    slow_project: SlowProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The forest with a 50 ms queueing deadline and batches of at most 2 rows."""
    # max_batch_rows too: whatever is queued is otherwise stacked into one call up to 1024 rows,
    # and a fast machine then answers the whole flood before any deadline passes.
    env = {
        "MLSERVE_REQUEST_TIMEOUT_S": "0.05",
        "MLSERVE_MAX_BATCH_SIZE": "2",
        "MLSERVE_MAX_BATCH_ROWS": "2",
    }
    with running_server(
        slow_project.root, FOREST, env=env, log_dir=tmp_path_factory.mktemp("deadline-logs")
    ) as server:
        yield server


@pytest.fixture(scope="module")
def two_worker_server(
    serving_project: ServingProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """`mlserve serve iris --workers 2`, once both workers answer ready."""
    with running_server(
        serving_project.root,
        IRIS,
        "--workers",
        "2",
        log_dir=tmp_path_factory.mktemp("workers-logs"),
        wait="none",
    ) as server:
        wait_for_every_worker(server)
        yield server


@pytest.fixture(scope="module")
def cached_server(
    serving_project: ServingProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """iris versions 1 and 2 with the cache on (by environment), and price with it off."""
    with running_server(
        serving_project.root,
        f"{IRIS}:1",
        f"{IRIS}:2",
        PRICE,
        env={"MLSERVE_MODELS__IRIS__CACHE": "true"},
        log_dir=tmp_path_factory.mktemp("cache-logs"),
    ) as server:
        yield server
