"""A project made and trained by the real `mlserve` command, shared by a module's tests."""

from __future__ import annotations

import pytest
from cli_harness import STALE_CONFIG, Project, assert_ok, run_cli


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """`mlserve init --force` over a stale mlserve.yaml, then `mlserve train` the sample data as
    ``cancer`` with alias production.

    Shared by a module's tests: they add models and aliases of their own, but leave ``cancer``
    version 1 and its production alias alone.
    """
    folder = tmp_path_factory.mktemp("project")
    (folder / "mlserve.yaml").write_text(STALE_CONFIG)
    init = run_cli("init", "--force", cwd=folder)
    assert_ok(init)
    train = run_cli(
        "train",
        "data/breast_cancer.csv",
        "--target",
        "diagnosis",
        "--name",
        "cancer",
        "--alias",
        "production",
        cwd=folder,
    )
    assert_ok(train)
    return Project(folder, init, train)
