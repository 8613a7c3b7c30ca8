"""Several OS processes writing one SQLite registry at the same moment."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from racing_workers import PRELUDE, run_together
from sklearn.linear_model import LogisticRegression
from sqlalchemy import create_engine, inspect

from mlserve.registry import RegistryStore
from mlserve.registry.migrations.runner import current_revision, head_revision
from mlserve.runtimes import dump_sklearn
from mlserve.types import Signature, file_sha256, read_manifest, verify_artifact

PROCESSES = 4
REGISTRATIONS_EACH = 5

WORKER = (
    PRELUDE
    + """
if mode == "open":
    wait_for_go()
store = open_store()
if mode == "register":
    signature = Signature.from_dict(config["signature"])
    model = Path(config["models"][worker])
    wait_for_go()
    versions = []
    for seq in range(config["count"]):
        new = NewVersion(
            "sklearn", signature, tags={"worker": worker, "seq": str(seq)}, description=worker
        )
        versions.append(store.register_version("churn", model, new, actor=worker).version)
    print(json.dumps(versions))
store.close()
"""
)


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A folder for the registry, the worker config and the start signal."""
    folder = tmp_path / "shared"
    folder.mkdir()
    return folder


def write_config(shared: Path, **extra: object) -> dict[str, object]:
    """Write the workers' config.json: a fresh registry in ``shared`` plus ``extra``."""
    config = {
        "database_url": f"sqlite:///{shared / 'registry.db'}",
        "artifact_root": str(shared / "artifacts"),
        "cache_dir": str(shared / "cache"),
        **extra,
    }
    (shared / "config.json").write_text(json.dumps(config))
    return config


def test_concurrent_registrations_get_distinct_consecutive_versions(
    shared: Path, iris_frame: pd.DataFrame, iris_signature: Signature
) -> None:
    workers = [f"w{i}" for i in range(PROCESSES)]
    models = {}
    for i, worker in enumerate(workers):
        # A different model per worker, so a folder written by the wrong worker is detectable.
        model = LogisticRegression(C=1.0 + i).fit(
            iris_frame[iris_signature.feature_names], iris_frame["species"]
        )
        models[worker] = str(dump_sklearn(model, shared / f"model-{worker}.joblib"))
    assert len({file_sha256(Path(p)) for p in models.values()}) == PROCESSES
    config = write_config(
        shared, models=models, count=REGISTRATIONS_EACH, signature=iris_signature.to_dict()
    )

    outputs = run_together(WORKER, shared, dict.fromkeys(workers, "register"))

    claimed = {worker: json.loads(out) for worker, out in outputs.items()}
    interleaved = [v for v in claimed.values() if v != list(range(v[0], v[0] + len(v)))]
    assert interleaved, f"the workers never overlapped, so nothing was tested: {claimed}"
    total = PROCESSES * REGISTRATIONS_EACH
    all_claimed = sorted(v for versions in claimed.values() for v in versions)
    assert all_claimed == list(range(1, total + 1))
    for versions in claimed.values():
        assert versions == sorted(versions)  # each worker registers one after another

    store = RegistryStore(
        str(config["database_url"]), str(config["artifact_root"]), shared / "cache"
    )
    try:
        rows = store.list_versions("churn")
        (info,) = store.list_models()
    finally:
        store.close()
    assert [row.version for row in rows] == list(range(1, total + 1))
    assert (info.latest_version, info.version_count) == (total, total)
    for row in rows:
        worker = row.tags["worker"]
        assert row.version in claimed[worker]
        assert row.created_by == worker
        assert row.sha256 == file_sha256(Path(models[worker]))
        folder = Path(row.artifact_uri)
        manifest = verify_artifact(folder, expected_sha256=row.sha256)
        assert manifest == read_manifest(folder)
        assert (manifest.name, manifest.version) == ("churn", row.version)
        assert manifest.tags == row.tags
        assert manifest.description == worker
        assert manifest.signature == row.signature == iris_signature
    seqs = {(row.tags["worker"], row.tags["seq"]) for row in rows}
    assert len(seqs) == total


def test_concurrent_first_opens_of_a_new_registry_all_succeed(shared: Path) -> None:
    config = write_config(shared)
    assert not (shared / "registry.db").exists()

    run_together(WORKER, shared, {f"w{i}": "open" for i in range(PROCESSES)})

    engine = create_engine(str(config["database_url"]))
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert tables == {
        "alembic_version",
        "models",
        "model_versions",
        "aliases",
        "alias_events",
        "training_runs",
        "version_events",
        "rollouts",
        "rollout_events",
    }
