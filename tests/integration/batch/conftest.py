"""Fixtures: a project folder whose registry holds churn:1, and that model loaded here."""

from __future__ import annotations

from pathlib import Path

import pytest
from batch_harness import BatchProject

from mlserve.runtimes import Runtime, load_runtime


@pytest.fixture
def project(tmp_path: Path) -> BatchProject:
    """A project in ``tmp_path`` with churn:1 registered."""
    project = BatchProject(tmp_path)
    project.register(seed=0)
    return project


@pytest.fixture
def churn_v1(project: BatchProject) -> Runtime:
    """churn:1 loaded in this process, to compute the predictions a job must write."""
    store = project.store()
    try:
        version = store.resolve("churn:1")
        return load_runtime(store.local_folder(version), expected_sha256=version.sha256)
    finally:
        store.close()
