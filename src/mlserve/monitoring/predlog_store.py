"""The prediction log's database: one row per predicted row, plus the feedback joined to them.

A database of its own (SQLAlchemy Core, any URL; SQLite in WAL mode by default), separate from
the registry: it grows by the million and is pruned, while the registry is small and precious.
The two tables are created on open, so several server processes can share one file.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError

from mlserve.monitoring.feedback import (
    FeedbackItem,
    FeedbackResult,
    OnlineMetrics,
    Task,
    guess_task,
    score,
)

log = logging.getLogger(__name__)

metadata = sa.MetaData()

predictions_table = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Double, nullable=False, doc="Unix time (UTC) of the prediction"),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("row", sa.Integer, nullable=False, doc="Index of the row within its request"),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("inputs", sa.Text, nullable=False, doc="JSON object: feature -> value"),
    sa.Column("prediction", sa.Text, nullable=False, doc="JSON value"),
    sa.Column("proba", sa.Text, nullable=True, doc="JSON list of class probabilities"),
    sa.Column("latency_ms", sa.Double, nullable=False),
    sa.Index("ix_predictions_model_version_ts", "model", "version", "ts"),
    sa.Index("ix_predictions_model_request_id", "model", "request_id"),
    # No index on ts alone: every index makes each insert dearer (the writer's main cost), and
    # pruning reaches old rows through (model, version, ts).
)

feedback_table = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("row", sa.Integer, nullable=False),
    sa.Column("label", sa.Text, nullable=False, doc="JSON value"),
    sa.Column("ts", sa.Double, nullable=False, doc="Unix time (UTC) the label arrived"),
    sa.Index("ix_feedback_model_request_id_row", "model", "request_id", "row"),
    sa.Index("ix_feedback_ts", "ts"),
)

_IN_CHUNK = 500
"""Most values in one SQL IN list (SQLite limits bound parameters)."""
_PRUNE_CHUNK = 10_000
"""Rows deleted per transaction when pruning, so other writers wait only briefly."""
FIXED_COLUMNS = ("ts", "request_id", "row", "model", "version", "prediction", "latency_ms")
"""Columns of an export besides the features and probabilities."""


class PredictionRecord(NamedTuple):
    """One predicted row as the log keeps it.

    A NamedTuple rather than a frozen dataclass: the writer makes one per logged row, and a
    frozen dataclass takes three times as long to build.
    """

    ts: datetime
    request_id: str
    row: int
    model: str
    version: str
    inputs: dict[str, Any]
    """Feature -> value (redacted features left out; NaN is stored as null)."""
    prediction: Any
    proba: list[float] | None
    latency_ms: float


@dataclass(frozen=True, slots=True)
class LoggedWindow:
    """Logged rows of a time window, for drift checks."""

    inputs: pd.DataFrame
    """One column per logged (non-redacted) feature, one row per prediction."""
    predictions: pd.Series
    """The predicted value or label per row (same index)."""
    timestamps: pd.Series
    """Tz-aware UTC datetimes per row."""


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode()


def _unix(moment: datetime) -> float:
    if moment.tzinfo is None:
        raise ValueError("prediction log times must be timezone-aware")
    return moment.timestamp()


class PredictionLogStore:
    """Writes, reads, prunes and joins feedback to logged predictions. Thread-safe.

    Raises SQLAlchemy's DBAPIError subclasses when the database fails; callers decide whether
    to retry (the writer) or answer with an error.
    """

    def __init__(self, url: str, *, busy_timeout_s: float = 30.0) -> None:
        self.url = url
        self._engine = _make_engine(url, busy_timeout_s)
        self._create_tables()

    def _create_tables(self) -> None:
        # Several worker processes open the same file at once: one may create a table between
        # another's existence check and its CREATE, so a failed attempt is retried.
        for attempt in range(5):
            try:
                metadata.create_all(self._engine, checkfirst=True)
                return
            except DBAPIError:
                if attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def close(self) -> None:
        """Release every connection."""
        self._engine.dispose()

    # -- writing -----------------------------------------------------------------------------

    def write(self, records: Sequence[PredictionRecord]) -> None:
        """Insert ``records`` in one transaction (an executemany)."""
        if not records:
            return
        rows = [
            {
                "ts": _unix(r.ts),
                "request_id": r.request_id,
                "row": r.row,
                "model": r.model,
                "version": r.version,
                "inputs": _dumps(r.inputs),
                "prediction": _dumps(r.prediction),
                "proba": None if r.proba is None else _dumps(r.proba),
                "latency_ms": r.latency_ms,
            }
            for r in records
        ]
        with self._engine.begin() as conn:
            conn.execute(predictions_table.insert(), rows)

    def prune(self, older_than: datetime, limit: int | None = None) -> int:
        """Delete predictions (and feedback received) before ``older_than``, at most about
        ``limit`` rows (None: all); return how many. A short transaction per chunk, so other
        writers wait only briefly."""
        cutoff = _unix(older_than)
        p, f = predictions_table, feedback_table
        with self._engine.connect() as conn:
            versions = conn.execute(sa.select(p.c.model, p.c.version).distinct()).all()
        deleted = 0
        for model, version in versions:
            where = [p.c.model == model, p.c.version == version, p.c.ts < cutoff]
            deleted += self._delete_chunked(p, where, None if limit is None else limit - deleted)
            if limit is not None and deleted >= limit:
                return deleted
        return deleted + self._delete_chunked(f, [f.c.ts < cutoff], limit)

    def _delete_chunked(
        self, table: sa.Table, where: list[sa.ColumnElement[bool]], limit: int | None
    ) -> int:
        """Delete matching rows a chunk per transaction, up to ``limit``; return how many."""
        deleted = 0
        while limit is None or deleted < limit:
            size = _PRUNE_CHUNK if limit is None else min(_PRUNE_CHUNK, limit - deleted)
            chunk = sa.select(table.c.id).where(*where).limit(size).subquery()
            with self._engine.begin() as conn:
                result = conn.execute(table.delete().where(table.c.id.in_(sa.select(chunk))))
            deleted += result.rowcount
            if result.rowcount < size:
                break
        return deleted

    # -- reading -----------------------------------------------------------------------------

    def count(self, model: str | None = None) -> int:
        """Logged rows, of one model or of all."""
        query = sa.select(sa.func.count()).select_from(predictions_table)
        if model is not None:
            query = query.where(predictions_table.c.model == model)
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def read_window(
        self,
        model: str,
        version: str | None,
        since: datetime | None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> LoggedWindow:
        """Rows of ``model`` logged in [since, until), oldest first; the newest ``limit`` rows
        when a limit is given; every version when ``version`` is None."""
        t = predictions_table
        query = sa.select(t.c.ts, t.c.inputs, t.c.prediction).where(
            *self._window(model, version, since, until)
        )
        if limit is not None:
            query = query.order_by(t.c.ts.desc(), t.c.id.desc()).limit(limit)
        else:
            query = query.order_by(t.c.ts, t.c.id)
        with self._engine.connect() as conn:
            rows = list(conn.execute(query))
        if limit is not None:
            rows.reverse()
        inputs = pd.DataFrame([orjson.loads(r.inputs) for r in rows])
        return LoggedWindow(
            inputs=inputs,
            predictions=pd.Series(
                [orjson.loads(r.prediction) for r in rows], index=inputs.index, dtype=object
            ).infer_objects(),
            timestamps=pd.Series(_datetimes([r.ts for r in rows]), index=inputs.index),
        )

    def read_records(
        self,
        model: str,
        version: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[PredictionRecord]:
        """Logged rows of ``model`` in [since, until), oldest first, as they were written
        (NaN inputs read back as None)."""
        t = predictions_table
        query = (
            sa.select(t).where(*self._window(model, version, since, until)).order_by(t.c.ts, t.c.id)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            PredictionRecord(
                ts=datetime.fromtimestamp(r.ts, UTC),
                request_id=r.request_id,
                row=r.row,
                model=r.model,
                version=r.version,
                inputs=orjson.loads(r.inputs),
                prediction=orjson.loads(r.prediction),
                proba=None if r.proba is None else orjson.loads(r.proba),
                latency_ms=r.latency_ms,
            )
            for r in rows
        ]

    def export(
        self,
        model: str,
        version: str | None,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        classes: Sequence[Any] = (),
    ) -> pd.DataFrame:
        """Logged rows as a flat frame, oldest first: ts (UTC), request_id, row, model, version,
        one column per feature (``input_NAME`` when NAME clashes with a fixed column),
        prediction, ``proba_CLASS`` per class (``proba_0``... without ``classes``), latency_ms."""
        records = self.read_records(model, version, since, until)
        features = pd.DataFrame([r.inputs for r in records])
        features.columns = [f"input_{c}" if c in FIXED_COLUMNS else c for c in features.columns]
        frame = pd.DataFrame(
            {
                "ts": pd.to_datetime([r.ts for r in records], utc=True),
                "request_id": pd.Series([r.request_id for r in records], dtype=object),
                "row": pd.array([r.row for r in records], dtype="int64"),
                "model": pd.Series([r.model for r in records], dtype=object),
                "version": pd.Series([r.version for r in records], dtype=object),
            }
        )
        frame = pd.concat([frame, features], axis=1)
        frame["prediction"] = pd.Series(
            [r.prediction for r in records], dtype=object
        ).infer_objects()
        width = max((len(r.proba) for r in records if r.proba is not None), default=0)
        names = (
            [str(c) for c in classes] if len(classes) == width else [str(i) for i in range(width)]
        )
        for index, name in enumerate(names):
            frame[f"proba_{name}"] = pd.array(
                [
                    r.proba[index] if r.proba is not None and index < len(r.proba) else None
                    for r in records
                ],
                dtype="Float64",
            ).astype("float64")
        frame["latency_ms"] = pd.array([r.latency_ms for r in records], dtype="float64")
        return frame

    @staticmethod
    def _window(
        model: str, version: str | None, since: datetime | None, until: datetime | None
    ) -> list[sa.ColumnElement[bool]]:
        t = predictions_table
        where = [t.c.model == model]
        if version is not None:
            where.append(t.c.version == version)
        if since is not None:
            where.append(t.c.ts >= _unix(since))
        if until is not None:
            where.append(t.c.ts < _unix(until))
        return where

    # -- feedback ----------------------------------------------------------------------------

    def add_feedback(
        self, model: str, items: Sequence[FeedbackItem], now: datetime | None = None
    ) -> FeedbackResult:
        """Join true labels to logged predictions of ``model`` by (request_id, row).

        A label for a row that already has one replaces it. Items matching no logged prediction
        are not stored; their request ids come back in ``unknown``.
        """
        received = _unix(now or datetime.now(UTC))
        t = predictions_table
        found: dict[tuple[str, int], list[str]] = defaultdict(list)
        ids = list(dict.fromkeys(item.request_id for item in items))
        with self._engine.begin() as conn:
            for chunk in _chunks(ids, _IN_CHUNK):
                query = sa.select(t.c.request_id, t.c.row, t.c.version).where(
                    t.c.model == model, t.c.request_id.in_(chunk)
                )
                for request_id, row, version in conn.execute(query):
                    found[(request_id, row)].append(version)
            joined: dict[tuple[str, int], FeedbackItem] = {}
            unmatched: list[FeedbackItem] = []
            by_version: dict[str, int] = defaultdict(int)
            for item in items:
                versions = found.get((item.request_id, item.row))
                if versions is None:
                    unmatched.append(item)
                    continue
                joined[(item.request_id, item.row)] = item  # the last label given wins
                for version in versions:
                    by_version[version] += 1
            if joined:
                f = feedback_table
                keys = [{"m": model, "r": rid, "n": row} for rid, row in joined]
                conn.execute(
                    f.delete().where(
                        f.c.model == sa.bindparam("m"),
                        f.c.request_id == sa.bindparam("r"),
                        f.c.row == sa.bindparam("n"),
                    ),
                    keys,
                )
                conn.execute(
                    f.insert(),
                    [
                        {
                            "model": model,
                            "request_id": item.request_id,
                            "row": item.row,
                            "label": _dumps(item.label),
                            "ts": received,
                        }
                        for item in joined.values()
                    ],
                )
        return FeedbackResult(joined_by_version=dict(by_version), unmatched=unmatched)

    def online_metrics(
        self, model: str, since: datetime | None, tasks: dict[str, Task] | None = None
    ) -> dict[str, OnlineMetrics]:
        """Per version, the scores of predictions made since ``since`` that have a label.

        ``tasks`` gives each version's task; versions missing from it are guessed from their
        predictions (text labels mean classification).
        """
        p, f = predictions_table, feedback_table
        query = (
            sa.select(p.c.version, p.c.prediction, f.c.label)
            .join(
                f,
                sa.and_(
                    f.c.model == p.c.model,
                    f.c.request_id == p.c.request_id,
                    f.c.row == p.c.row,
                ),
            )
            .where(p.c.model == model)
        )
        if since is not None:
            query = query.where(p.c.ts >= _unix(since))
        pairs: dict[str, tuple[list[Any], list[Any]]] = defaultdict(lambda: ([], []))
        with self._engine.connect() as conn:
            for version, prediction, label in conn.execute(query):
                predicted, labels = pairs[version]
                predicted.append(orjson.loads(prediction))
                labels.append(orjson.loads(label))
        known = tasks or {}
        return {
            version: score(known.get(version) or guess_task(predicted), predicted, labels)
            for version, (predicted, labels) in sorted(pairs.items())
        }


def _datetimes(unix_s: list[float]) -> pd.DatetimeIndex:
    """Tz-aware UTC datetimes, rounded to the microsecond a float of Unix seconds can hold."""
    micros = np.round(np.asarray(unix_s, dtype=np.float64) * 1e6).astype(np.int64)
    return pd.to_datetime(micros, unit="us", utc=True)


def _chunks(values: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite URL names (None for other databases and in-memory SQLite)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _make_engine(url: str, busy_timeout_s: float) -> Engine:
    path = sqlite_path(url)
    if path is None and not make_url(url).drivername.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": busy_timeout_s})

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # busy_timeout first: switching to WAL needs a lock another process may hold. WAL lets
        # the writer thread, feedback reads and other worker processes work side by side.
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    return engine


def safe_url(url: str) -> str:
    """The URL without its password, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)
