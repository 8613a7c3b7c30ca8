"""Registry migrations: empty database to head, old data survives, models match migrations."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, MetaData, String, create_engine, inspect, text

from mlserve.registry import NewVersion, RegistryStore
from mlserve.registry.migrations.runner import (
    HEAD_REVISION,
    current_revision,
    head_revision,
    upgrade_database,
)
from mlserve.registry.models import Base

FIRST_REVISION = "0001"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """An engine on an empty SQLite file."""
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    yield engine
    engine.dispose()


def _schema_differences(engine: Engine, metadata: MetaData) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_empty_database_is_upgraded_to_head(engine: Engine) -> None:
    assert current_revision(engine) is None
    upgrade_database(engine)
    assert head_revision() is not None
    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names()) >= set(Base.metadata.tables)


def test_the_quick_head_check_knows_the_newest_migration() -> None:
    # upgrade_database skips Alembic when the database says HEAD_REVISION: a new migration
    # script must move HEAD_REVISION too, or databases would never be upgraded to it.
    assert head_revision() == HEAD_REVISION


def test_a_database_behind_head_is_upgraded_despite_the_quick_check(engine: Engine) -> None:
    upgrade_database(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    with pytest.raises(Exception, match="older"):  # Alembic was asked, and knows no 'older'
        upgrade_database(engine)


def test_upgrading_a_current_database_changes_nothing(engine: Engine) -> None:
    upgrade_database(engine)
    upgrade_database(engine)
    assert current_revision(engine) == head_revision()


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    # A change to models.py without a migration shows up here.
    upgrade_database(engine)
    assert _schema_differences(engine, Base.metadata) == []


def test_schema_comparison_notices_a_model_change_without_a_migration(engine: Engine) -> None:
    upgrade_database(engine)
    changed = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["models"].append_column(Column("owner", String(64), nullable=True))
    differences = _schema_differences(engine, changed)
    assert [(d[0], d[3].name) for d in differences] == [("add_column", "owner")]


def test_data_written_at_the_first_revision_survives_the_upgrade(
    tmp_path: Path, engine: Engine, classifier_file: Path, new_version: NewVersion
) -> None:
    upgrade_database(engine, FIRST_REVISION)
    assert current_revision(engine) == FIRST_REVISION
    signature = (
        '{"inputs": [{"name": "age", "dtype": "int64", "kind": "numeric"}], "task": "regression"}'
    )
    at = "2025-06-01 08:00:00.000000"
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO models (id, name, description, last_version, created_at) "
                "VALUES (1, 'churn', 'legacy model', 2, :at)"
            ),
            {"at": at},
        )
        for version in (1, 2):
            connection.execute(
                text(
                    "INSERT INTO model_versions (model_id, version, status, framework, "
                    "artifact_uri, model_file, sha256, signature, metrics, params, tags, "
                    "description, data_fingerprint, reference_profile, created_by, created_at) "
                    "VALUES (1, :v, 'ready', 'sklearn', :uri, 'model.joblib', :sha, :sig, "
                    "'{\"r2\": 0.5}', '{}', '{}', 'old', NULL, NULL, 'alice', :at)"
                ),
                {
                    "v": version,
                    "uri": f"/old/churn/{version}",
                    "sha": "ab" * 32,
                    "sig": signature,
                    "at": at,
                },
            )
        connection.execute(
            text(
                "INSERT INTO aliases (model_id, alias, version, updated_at) "
                "VALUES (1, 'production', 1, :at)"
            ),
            {"at": at},
        )
        connection.execute(
            text(
                "INSERT INTO alias_events (model_id, alias, from_version, to_version, actor, at) "
                "VALUES (1, 'production', NULL, 1, 'alice', :at)"
            ),
            {"at": at},
        )
        connection.execute(
            text(
                "INSERT INTO training_runs (model_id, version, estimator, task, params, metrics, "
                "baseline_metrics, data_path, data_fingerprint, rows_train, rows_test, "
                "duration_s, git_commit, started_at) VALUES (1, 1, 'ridge', 'regression', '{}', "
                "'{\"r2\": 0.5}', '{\"r2\": 0.0}', 'data.csv', NULL, 80, 20, 1.5, NULL, :at)"
            ),
            {"at": at},
        )
    engine.dispose()

    store = RegistryStore(str(engine.url), str(tmp_path / "artifacts"), tmp_path / "cache")
    try:
        assert current_revision(engine) == head_revision()
        old_at = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)

        production = store.resolve("churn")
        assert production.version == 1
        assert production.aliases == ("production",)
        assert production.signature.feature_names == ["age"]
        assert production.signature.task == "regression"
        assert production.metrics == {"r2": 0.5}
        assert production.created_by == "alice"
        assert production.created_at == old_at
        assert [v.version for v in store.list_versions("churn")] == [1, 2]

        (info,) = store.list_models()
        assert (info.name, info.description, info.created_at) == ("churn", "legacy model", old_at)
        assert info.aliases == {"production": 1}

        (event,) = store.alias_history("churn")
        assert (event.from_version, event.to_version, event.actor, event.at) == (
            None,
            1,
            "alice",
            old_at,
        )
        (run,) = store.list_runs("churn")
        assert (run.estimator, run.rows_train, run.duration_s) == ("ridge", 80, 1.5)
        assert run.baseline_metrics == {"r2": 0.0}

        # Numbering continues from the old counter, and old aliases still move.
        assert store.register_version("churn", classifier_file, new_version).version == 3
        assert store.set_alias("churn", "production", 3).from_version == 1
    finally:
        store.close()
