"""Bring a registry database to the newest schema with Alembic, safely from many processes."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import FileLock
from sqlalchemy import Engine, text

_SCRIPTS = Path(__file__).parent
_PG_LOCK_KEY = 0x6D6C7376  # "mlsv": one advisory lock id for registry migrations


def alembic_config() -> Config:
    """An Alembic config pointing at mlserve's migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def head_revision() -> str | None:
    """The newest migration's id."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None when empty)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    """Apply pending migrations; a no-op when the schema is current.

    Two processes opening a new registry at once must not both create tables, so the upgrade
    runs under a lock: a file lock beside a SQLite file, an advisory lock on PostgreSQL.
    """
    if revision == "head" and current_revision(engine) == head_revision():
        return
    with _migration_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _migration_lock(engine: Engine) -> AbstractContextManager[object]:
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return FileLock(f"{database}.migrate.lock", timeout=60)
    return nullcontext()
