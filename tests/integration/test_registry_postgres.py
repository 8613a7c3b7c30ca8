"""The registry on a real PostgreSQL server, written by several OS processes at the same moment.

Each test gets a fresh database on the server from ``postgres_url`` (tests/integration/
conftest.py) and starts real worker processes, released together by a go file, that migrate it,
register versions of one model or move its aliases. What each worker did, it prints; the test
compares that with what the registry holds: no migration failure, no duplicate or lost version
number, and an alias audit trail with every move, chained, ending where the alias points.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import count, pairwise
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import racing_workers
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from racing_workers import PRELUDE
from sklearn.linear_model import LogisticRegression
from sqlalchemy import create_engine, inspect, make_url, text

from mlserve.registry import NewVersion, RegistryStore
from mlserve.registry.migrations.runner import current_revision, head_revision, upgrade_database
from mlserve.registry.models import Base
from mlserve.runtimes import dump_sklearn
from mlserve.types import Signature, file_sha256, verify_artifact

PROCESSES = 4
REGISTRATIONS_EACH = 5
MOVES_EACH = 8
REGISTRY_TABLES = {
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

WORKER = (
    PRELUDE
    + """
if mode == "migrate":
    wait_for_go()
    open_store().close()
    sys.exit(0)
store = open_store()
done = []
if mode == "register":
    signature = Signature.from_dict(config["signature"])
    model = Path(config["models"][worker])
    wait_for_go()
    for seq in range(config["count"]):
        new = NewVersion("sklearn", signature, tags={"worker": worker, "seq": str(seq)})
        version = store.register_version(config["name"], model, new, actor=worker).version
        if config.get("promote"):  # and point production at it straight away
            event = store.set_alias(config["name"], "production", version, actor=worker)
            done.append([version, event.from_version, event.to_version])
        else:
            done.append(version)
elif mode == "move":
    wait_for_go()
    for target in config["moves"][worker]:
        event = store.set_alias(config["name"], "production", target, actor=worker)
        done.append([event.from_version, event.to_version])
store.close()
print(json.dumps(done))
"""
)


def run_together(shared: Path, workers: dict[str, str]) -> dict[str, Any]:
    """Start one process per worker (name -> mode), release them at once, return their JSON."""
    outputs = racing_workers.run_together(WORKER, shared, workers)
    return {w: json.loads(out) if out.strip() else None for w, out in outputs.items()}


_numbers = count()


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """A new, empty database on the module's PostgreSQL server; dropped afterwards."""
    name = f"registry_{next(_numbers)}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
        url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        yield url
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    finally:
        admin.dispose()


@pytest.fixture
def shared(tmp_path: Path, database_url: str) -> Path:
    """A folder for the workers' config, artifacts and start signal (registry on PostgreSQL)."""
    folder = tmp_path / "shared"
    folder.mkdir()
    write_config(folder, database_url=database_url)
    return folder


def write_config(shared: Path, **values: object) -> dict[str, object]:
    """Add ``values`` to the workers' config.json (artifacts and cache live in ``shared``)."""
    path = shared / "config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    config.update(
        {
            "artifact_root": str(shared / "artifacts"),
            "cache_dir": str(shared / "cache"),
            **values,
        }
    )
    path.write_text(json.dumps(config))
    return config


def open_store(shared: Path) -> RegistryStore:
    """The registry the workers wrote."""
    config = json.loads((shared / "config.json").read_text())
    return RegistryStore(config["database_url"], config["artifact_root"], shared / "cache")


def worker_models(
    shared: Path, workers: list[str], iris_frame: pd.DataFrame, iris_signature: Signature
) -> dict[str, str]:
    """A different model file per worker, so a folder written by the wrong one shows."""
    models = {}
    for i, worker in enumerate(workers):
        model = LogisticRegression(C=1.0 + i).fit(
            iris_frame[iris_signature.feature_names], iris_frame["species"]
        )
        models[worker] = str(dump_sklearn(model, shared / f"model-{worker}.joblib"))
    assert len({file_sha256(Path(p)) for p in models.values()}) == len(workers)
    return models


# -- migrations -------------------------------------------------------------------------------------


def test_processes_migrating_an_empty_database_at_once_all_succeed(
    shared: Path, database_url: str
) -> None:
    engine = create_engine(database_url)
    try:
        assert inspect(engine).get_table_names() == []

        run_together(shared, {f"w{i}": "migrate" for i in range(PROCESSES)})

        assert current_revision(engine) == head_revision()
        assert set(inspect(engine).get_table_names()) == REGISTRY_TABLES
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        assert [row[0] for row in versions] == [head_revision()]
    finally:
        engine.dispose()


def test_a_migration_waits_for_the_advisory_lock(shared: Path, database_url: str) -> None:
    # Whoever holds the registry's advisory lock (here: this test) keeps every migration out.
    from mlserve.registry.migrations.runner import _PG_LOCK_KEY

    engine = create_engine(database_url)
    holder = engine.connect()
    try:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
        holder.commit()
        migrating = subprocess.Popen(
            [sys.executable, "-c", WORKER, "migrate", str(shared), "w0"],
            stderr=subprocess.PIPE,
            text=True,
        )
        (shared / "go").touch()
        try:
            time.sleep(3.0)  # ample for a migration that does not wait: it takes ~0.3 s here
            assert migrating.poll() is None, migrating.communicate()[1]
            assert current_revision(engine) is None
            waiting = holder.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND objid = :k"
                ),
                {"k": _PG_LOCK_KEY},
            ).scalar_one()
            holder.commit()
            assert waiting == 1
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
            holder.commit()
            _, stderr = migrating.communicate(timeout=60)
        assert migrating.returncode == 0, stderr
        assert current_revision(engine) == head_revision()
    finally:
        holder.close()
        engine.dispose()


def test_migrated_schema_matches_the_models_on_postgresql(database_url: str) -> None:
    # A difference SQLite cannot show (types, indexes, constraints as PostgreSQL reflects them).
    engine = create_engine(database_url)
    try:
        upgrade_database(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert list(compare_metadata(context, Base.metadata)) == []
    finally:
        engine.dispose()


# -- versions and aliases ---------------------------------------------------------------------------


def test_processes_registering_at_once_get_distinct_consecutive_versions(
    shared: Path, iris_frame: pd.DataFrame, iris_signature: Signature
) -> None:
    workers = [f"w{i}" for i in range(PROCESSES)]
    models = worker_models(shared, workers, iris_frame, iris_signature)
    write_config(
        shared,
        name="churn",  # not registered yet: the workers race to create the model too
        models=models,
        count=REGISTRATIONS_EACH,
        signature=iris_signature.to_dict(),
    )
    open_store(shared).close()  # migrated here, so the workers race on registrations only

    outputs = run_together(shared, dict.fromkeys(workers, "register"))

    claimed: dict[str, list[int]] = outputs
    interleaved = [v for v in claimed.values() if v != list(range(v[0], v[0] + len(v)))]
    assert interleaved, f"the workers never overlapped, so nothing was tested: {claimed}"
    total = PROCESSES * REGISTRATIONS_EACH
    assert sorted(v for versions in claimed.values() for v in versions) == list(range(1, total + 1))
    store = open_store(shared)
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
        manifest = verify_artifact(Path(row.artifact_uri), expected_sha256=row.sha256)
        assert (manifest.name, manifest.version, manifest.tags) == ("churn", row.version, row.tags)
    assert len({(row.tags["worker"], row.tags["seq"]) for row in rows}) == total


def assert_audit_trail_is_complete(
    store: RegistryStore, name: str, done: dict[str, list[tuple[int | None, int]]]
) -> None:
    """Every move a worker reported is in the trail, in its order, chained one to the next, and
    the alias points where the last recorded move took it."""
    history = [e for e in store.alias_history(name) if e.alias == "production"]
    assert len(history) == sum(len(moves) for moves in done.values())
    turns = sum(before.actor != after.actor for before, after in pairwise(history))
    assert turns >= len(done), f"the workers never overlapped, so nothing was tested: {history}"
    for worker, moves in done.items():
        recorded = [(e.from_version, e.to_version) for e in history if e.actor == worker]
        assert recorded == moves, worker
    assert history[0].from_version is None
    for before, after in pairwise(history):
        assert after.from_version == before.to_version, (before, after)
    assert all(before.at <= after.at for before, after in pairwise(history))
    assert store.resolve(f"{name}@production").version == history[-1].to_version


def test_concurrent_alias_moves_keep_the_audit_trail_complete(
    shared: Path, classifier_file: Path, new_version: NewVersion
) -> None:
    store = open_store(shared)
    try:
        for _ in range(3):
            store.register_version("churn", classifier_file, new_version)
    finally:
        store.close()
    workers = [f"w{i}" for i in range(PROCESSES)]
    # Each worker cycles through the versions from its own starting point, so consecutive moves
    # by different workers often disagree (and some move the alias where it already is).
    moves = {w: [(i + j) % 3 + 1 for j in range(MOVES_EACH)] for i, w in enumerate(workers)}
    write_config(shared, name="churn", moves=moves)

    outputs = run_together(shared, dict.fromkeys(workers, "move"))

    done = {w: [(m[0], m[1]) for m in moves_done] for w, moves_done in outputs.items()}
    assert {w: [to for _, to in moves_done] for w, moves_done in done.items()} == moves
    store = open_store(shared)
    try:
        assert_audit_trail_is_complete(store, "churn", done)
    finally:
        store.close()


def test_registering_and_moving_aliases_at_once_loses_nothing(
    shared: Path, iris_frame: pd.DataFrame, iris_signature: Signature
) -> None:
    # Two workers register versions and point production at each at once; two others move
    # production back and forth between the first two versions meanwhile.
    registering, moving = ["r0", "r1"], ["m0", "m1"]
    models = worker_models(shared, registering, iris_frame, iris_signature)
    store = open_store(shared)
    try:
        signature_version = NewVersion("sklearn", iris_signature, tags={"worker": "setup"})
        for _ in range(2):
            store.register_version("churn", Path(models["r0"]), signature_version)
    finally:
        store.close()
    moves = {w: [(i + j) % 2 + 1 for j in range(MOVES_EACH)] for i, w in enumerate(moving)}
    write_config(
        shared,
        name="churn",
        models=models,
        count=REGISTRATIONS_EACH,
        promote=True,
        signature=iris_signature.to_dict(),
        moves=moves,
    )

    outputs = run_together(
        shared, {**dict.fromkeys(registering, "register"), **dict.fromkeys(moving, "move")}
    )

    registered = {w: [entry[0] for entry in outputs[w]] for w in registering}
    new_versions = sorted(v for versions in registered.values() for v in versions)
    assert new_versions == list(range(3, 3 + 2 * REGISTRATIONS_EACH))
    done = {w: [(e[1], e[2]) for e in outputs[w]] for w in registering}
    done |= {w: [(e[0], e[1]) for e in outputs[w]] for w in moving}
    store = open_store(shared)
    try:
        assert [v.version for v in store.list_versions("churn")] == list(
            range(1, 3 + 2 * REGISTRATIONS_EACH)
        )
        assert_audit_trail_is_complete(store, "churn", done)
    finally:
        store.close()
