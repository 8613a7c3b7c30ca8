"""Bring a registry database to the newest schema with Alembic, safely from many processes.

Alembic (with Mako and Pygments behind it) takes a tenth of a second to import, which every
CLI command would pay to learn that nothing needs doing: the common case, a database already
at HEAD_REVISION, is checked with one plain query, and Alembic is imported only to migrate.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock
from sqlalchemy import Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

_SCRIPTS = Path(__file__).parent
_PG_LOCK_KEY = 0x6D6C7376  # "mlsv": one advisory lock id for registry migrations
HEAD_REVISION = "0003"
"""The newest migration's id (a test keeps it equal to what Alembic finds in versions/)."""


def alembic_config() -> Config:
    """An Alembic config pointing at mlserve's migration scripts."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def head_revision() -> str | None:
    """The newest migration's id, as Alembic reads it from the scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None when empty)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _at_head(engine: Engine) -> bool:
    """True when the database's alembic_version row says HEAD_REVISION (no Alembic needed)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return False
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    return [row[0] for row in rows] == [HEAD_REVISION]


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    """Apply pending migrations; a no-op when the schema is current.

    Two processes opening a new registry at once must not both create tables, so the upgrade
    runs under a lock: a file lock beside a SQLite file, an advisory lock on PostgreSQL.
    """
    if revision == "head" and _at_head(engine):
        return
    from alembic import command

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
