"""Fixtures: the churn classifier of ``batch_data`` registered in a temporary registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from batch_data import register_classifier

from mlserve.batch import PinnedModel, pin_model
from mlserve.registry import RegistryStore


@pytest.fixture
def churn_store(registry_store: RegistryStore, tmp_path: Path) -> RegistryStore:
    """``registry_store`` holding churn:1."""
    register_classifier(registry_store, tmp_path / "trained")
    return registry_store


@pytest.fixture
def churn_model(churn_store: RegistryStore, tmp_path: Path) -> PinnedModel:
    """churn:1, pinned for a job writing ``tmp_path / 'out.parquet'``."""
    return pin_model(churn_store, "churn", tmp_path / "out.parquet")
