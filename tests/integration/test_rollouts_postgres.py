"""Rollouts on a real PostgreSQL registry: the migration, one active rollout per model under
concurrent starts (the model's row lock, backed by the unique ``active_model_id``), promotion's
single transaction, and rollbacks by id from several threads at once.

The server comes from ``postgres_url`` in tests/integration/conftest.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from mlserve.errors import Conflict
from mlserve.registry import NewVersion, RegistryStore, RolloutLimits
from mlserve.registry.migrations.runner import current_revision, head_revision

THREADS = 6


@pytest.fixture
def pg_store(postgres_url: str, tmp_path: Path) -> Iterator[RegistryStore]:
    """A RegistryStore on the PostgreSQL server (shared by the module: use your own model)."""
    store = RegistryStore(postgres_url, str(tmp_path / "artifacts"), tmp_path / "cache")
    yield store
    store.close()


def model_with_versions(
    store: RegistryStore, name: str, classifier_file: Path, new_version: NewVersion
) -> str:
    """``name`` with versions 1..3, production at 1."""
    for _ in range(3):
        store.register_version(name, classifier_file, new_version)
    store.set_alias(name, "production", 1)
    return name


def together(work: Callable[[int], object]) -> list[object]:
    """Run ``work(i)`` on THREADS threads released at once; each result or exception."""
    start = threading.Barrier(THREADS)
    results: list[object] = [None] * THREADS

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = work(index)
        except BaseException as exc:  # collected for the caller's assertions
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_the_registry_is_migrated_to_head(pg_store: RegistryStore, postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_a_rollout_round_trips_and_promotes(
    pg_store: RegistryStore, classifier_file: Path, new_version: NewVersion
) -> None:
    name = model_with_versions(pg_store, "pg-roundtrip", classifier_file, new_version)
    limits = RolloutLimits(max_error_rate=0.02, max_p99_ratio=1.5, window_s=30.5, min_requests=7)
    started = pg_store.start_rollout(
        name, 3, canary=12.5, shadow=100, sticky_header="X-User", limits=limits, actor="pg"
    )
    assert pg_store.rollout(name) == started
    assert started.limits == limits
    assert started in pg_store.active_rollouts()
    changed = pg_store.update_rollout(name, canary=50, clear_sticky=True)
    assert (changed.canary, changed.sticky_header) == (50.0, None)
    promoted = pg_store.promote_rollout(name, actor="pg")
    assert promoted.state == "promoted"
    assert pg_store.resolve(f"{name}@production").version == 3
    assert pg_store.alias_history(name)[-1].from_version == 1
    assert [e.action for e in pg_store.rollout_history(name)] == ["start", "set", "promote"]


def test_concurrent_starts_leave_one_active_rollout(
    pg_store: RegistryStore, classifier_file: Path, new_version: NewVersion
) -> None:
    name = model_with_versions(pg_store, "pg-starts", classifier_file, new_version)
    results = together(lambda i: pg_store.start_rollout(name, 2 + i % 2, canary=i))
    started = [r for r in results if not isinstance(r, BaseException)]
    assert len(started) == 1
    assert all(isinstance(r, Conflict) for r in results if r not in started)
    assert len(pg_store.rollouts(name)) == 1
    assert len(pg_store.rollout_history(name)) == 1


def test_concurrent_rollbacks_by_id_end_it_once(
    pg_store: RegistryStore, classifier_file: Path, new_version: NewVersion
) -> None:
    name = model_with_versions(pg_store, "pg-rollbacks", classifier_file, new_version)
    rollout = pg_store.start_rollout(name, 2, canary=10)
    results = together(
        lambda i: pg_store.rollback_rollout(name, f"worker {i}", rollout_id=rollout.id)
    )
    assert all(r == results[0] for r in results)
    assert [e.action for e in pg_store.rollout_history(name)] == ["start", "rollback"]
    assert pg_store.rollout(name) is None
    assert pg_store.resolve(f"{name}@production").version == 1
