"""Fixtures for the dashboard and alert tests: promtool, Prometheus, and a monitored server.

``monitored_server`` serves a classifier (with the prediction cache on) and a regressor, both
trained by mlserve.training.train (so they have reference profiles), and checks drift every
second once a few rows are logged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from monitoring_harness import (
    CLASSIFIER,
    DRIFT_MIN_ROWS,
    classifier_frame,
    classifier_labels,
    regressor_frame,
    regressor_targets,
    require_binary,
)
from serving_harness import LiveServer, running_server

from mlserve.registry import RegistryStore
from mlserve.training import TrainRequest, train


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool (skips the test when it is not installed here; fails in CI)."""
    return require_binary("promtool")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """Path of prometheus (skips the test when it is not installed here; fails in CI)."""
    return require_binary("prometheus")


@pytest.fixture(scope="session")
def monitoring_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder whose registry has ``clicks`` and ``price`` in production."""
    root = tmp_path_factory.mktemp("monitoring-project")
    home = root / ".mlserve"
    store = RegistryStore(
        f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"), home / "cache"
    )
    try:
        clicks = classifier_frame(200, seed=1)
        clicks["clicked"] = classifier_labels(clicks)
        clicks.to_csv(root / "clicks.csv", index=False)
        train(store, TrainRequest(data=root / "clicks.csv", target="clicked", alias="production"))
        price = regressor_frame(200, seed=2)
        price["y"] = regressor_targets(price)
        price.to_csv(root / "price.csv", index=False)
        train(store, TrainRequest(data=root / "price.csv", target="y", alias="production"))
    finally:
        store.close()
    return root


@pytest.fixture(scope="session")
def monitored_server(
    monitoring_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """`mlserve serve` with the cache on for clicks, an accuracy floor for clicks and a drift
    check every second."""
    env = {
        "MLSERVE_DRIFT_INTERVAL_S": "1",
        "MLSERVE_DRIFT_MIN_ROWS": str(DRIFT_MIN_ROWS),
        f"MLSERVE_MODELS__{CLASSIFIER.upper()}__CACHE": "true",
        # exported as mlserve_online_accuracy_floor, the MlserveOnlineAccuracyLow threshold
        f"MLSERVE_MODELS__{CLASSIFIER.upper()}__ONLINE_ACCURACY_FLOOR": "0.5",
    }
    with running_server(
        monitoring_project, env=env, log_dir=tmp_path_factory.mktemp("monitored-server-logs")
    ) as server:
        yield server
