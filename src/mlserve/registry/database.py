"""The registry's database: engine, migrations, sessions, retries and the per-model lock.

Every transaction of the registry is written with these helpers: a short session, retried when
the database reports a transient lock conflict, that takes the model's lock before it reads
what it is about to change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mlserve.errors import ModelNotFound, RegistryUnavailable, VersionNotFound
from mlserve.registry.migrations.runner import upgrade_database
from mlserve.registry.models import AliasEventRow, AliasRow, ModelRow, VersionRow, utcnow

T = TypeVar("T")

READY = "ready"
"""Status of a version whose artifacts are complete; reads see only these."""
ARCHIVED = "archived"
"""Status of a version taken out of use: kept with its artifacts, never resolved or served."""
CONNECT_TIMEOUT_S = 10
"""Longest a PostgreSQL connection attempt waits for the server (libpq's connect_timeout)."""


class Database:
    """A migrated registry database and the transaction helpers its stores share."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._engine = _make_engine(database_url)
        try:
            upgrade_database(self._engine)
        except OperationalError as exc:  # the first connection: the server is not there
            self._engine.dispose()
            raise _unreachable(self.safe_url, exc) from exc
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    @property
    def safe_url(self) -> str:
        """The database URL with its password hidden, for logs and messages."""
        return self._engine.url.render_as_string(hide_password=True)

    def unavailable(self, error: BaseException) -> RegistryUnavailable | None:
        """``error`` as the RegistryUnavailable it means when the database itself failed (a
        connection refused, lost or cut by a server shutting down or starting up), naming the
        database; None for any other error (a bug, a missing row)."""
        if isinstance(error, RegistryUnavailable):
            return error
        if not isinstance(error, OperationalError | InterfaceError) and not (
            isinstance(error, DBAPIError) and error.connection_invalidated
        ):
            return None
        return _unreachable(self.safe_url, error)

    def close(self) -> None:
        """Release database connections."""
        self._engine.dispose()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    def _retry(self, operation: Callable[[], T], attempts: int = 8) -> T:
        """Run ``operation``, retrying when the database reports a transient lock conflict."""
        for attempt in range(attempts):
            try:
                return operation()
            except OperationalError as exc:
                if attempt == attempts - 1 or not _is_transient(exc):
                    raise
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _model(session: Session, name: str) -> ModelRow:
        model = session.scalar(select(ModelRow).where(ModelRow.name == name))
        if model is None:
            raise ModelNotFound(name)
        return model

    @staticmethod
    def _lock_model(session: Session, model: ModelRow) -> None:
        """Serialize alias and rollout changes of one model until the session commits.

        A no-op write takes the write lock (SQLite) or the row lock (PostgreSQL) before the
        alias or rollout is read, so two concurrent moves cannot both record the same "from"
        version, nor two starts both find no active rollout.
        """
        session.execute(
            update(ModelRow)
            .where(ModelRow.id == model.id)
            .values(last_version=ModelRow.last_version)
            .execution_options(synchronize_session=False)
        )

    @staticmethod
    def _move_alias(
        session: Session, model: ModelRow, alias: str, version: int, actor: str
    ) -> AliasEventRow:
        """Point ``alias`` at ``version`` and add its audit row; the caller holds the model lock
        and commits."""
        row = session.scalar(
            select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == alias)
        )
        previous = row.version if row is not None else None
        now = utcnow()
        if row is None:
            session.add(AliasRow(model_id=model.id, alias=alias, version=version, updated_at=now))
        else:
            row.version, row.updated_at = version, now
        event_row = AliasEventRow(
            model_id=model.id,
            alias=alias,
            from_version=previous,
            to_version=version,
            actor=actor,
            at=now,
        )
        session.add(event_row)
        return event_row

    @staticmethod
    def _version_row(session: Session, model: ModelRow, version: int) -> VersionRow:
        row = session.scalar(
            select(VersionRow).where(
                VersionRow.model_id == model.id,
                VersionRow.version == version,
                VersionRow.status == READY,
            )
        )
        if row is None:
            archived = session.scalar(
                select(VersionRow.id).where(
                    VersionRow.model_id == model.id,
                    VersionRow.version == version,
                    VersionRow.status == ARCHIVED,
                )
            )
            raise VersionNotFound(
                model.name, f"{version} (it is archived)" if archived else version
            )
        return row


def _one_line(error: BaseException) -> str:
    """A driver's message (often several lines, with hints) as one line."""
    return " ".join(str(error).split())


def _unreachable(safe_url: str, error: DBAPIError) -> RegistryUnavailable:
    return RegistryUnavailable(
        f"the registry database {safe_url} cannot be reached: {_one_line(error.orig or error)}"
    )


def _is_transient(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text or "deadlock" in text or "serialize" in text


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        database = url.split(":///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets readers run while one process writes; foreign keys are off by default.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if url.startswith("postgresql"):
        # Without a connect timeout, a database host that went silent (not one that refuses)
        # holds every read for the kernel's TCP retries, minutes, instead of failing it.
        return create_engine(
            url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
        )
    return create_engine(url, pool_pre_ping=True)
