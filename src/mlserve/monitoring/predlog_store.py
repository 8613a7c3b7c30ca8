"""The prediction log's database: one row per logged request, plus the feedback joined to it.

A database of its own (SQLAlchemy Core, any URL; SQLite in WAL mode by default), separate from
the registry: it grows by the million and is pruned, while the registry is small and precious.
The two tables are created on open, so several server processes can share one file.

A request's rows are stored together, as JSON arrays (inputs rows x logged features, one
prediction per row): writing costs one database row per request, however many rows it has.
Every reader expands requests back into one row per prediction.

Rows scored with a category training never saw (``unknown_categories: accept``) are flagged in
the request's ``unknown_categories`` column: a JSON object, feature -> positions of those rows
in the request, NULL when there are none (the usual request, which so costs nothing more).
Readers turn it back into a per-row flag: the features whose category was unknown in that row.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row, make_url
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
BINARY_INPUTS = "inputs_f64"
"""Added after the first layout: opening an older file adds it (``_add_missing_columns``)."""
UNKNOWN_CATEGORIES = "unknown_categories"
ROUTE = "route"
ROUTES = ("production", "canary", "sticky", "explicit", "fallback", "shadow")
"""Why a version answered (the ``route`` column): the model's name (production), a rollout's
canary draw or sticky key, a version the request named (explicit), production answering for a
failed candidate (fallback), or a rollout mirroring the request (shadow: never sent back)."""
"""Added after ``inputs_f64``, the same way."""
ADDED_COLUMNS = (BINARY_INPUTS, UNKNOWN_CATEGORIES, ROUTE)
"""Columns of ``prediction_requests`` that an older file may lack, in the order they came."""

requests_table = sa.Table(
    # Not "predictions": that name held one row per predicted row before, and a file of that
    # layout is left alone (and reported on open) rather than misread.
    "prediction_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Double, nullable=False, doc="Unix time (UTC) of the prediction"),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False, doc="Predicted rows in the request"),
    sa.Column("features", sa.Text, nullable=False, doc="JSON list of the logged feature names"),
    sa.Column(
        "inputs", sa.Text, nullable=False, doc="JSON rows x features (NaN as null); '' when binary"
    ),
    sa.Column("predictions", sa.Text, nullable=False, doc="JSON list, one value per row"),
    sa.Column("proba", sa.Text, nullable=True, doc="JSON rows x classes, or null"),
    sa.Column("latency_ms", sa.Double, nullable=False),
    sa.Column(
        BINARY_INPUTS,
        sa.LargeBinary,
        nullable=True,
        doc="All-float inputs as little-endian float64, rows x features (then inputs is '')",
    ),
    sa.Column(
        UNKNOWN_CATEGORIES,
        sa.Text,
        nullable=True,
        doc="JSON object: feature -> row positions holding an unknown category; null if none",
    ),
    sa.Column(ROUTE, sa.String(16), nullable=True, doc="Why this version answered (ROUTES)"),
    sa.Index("ix_prediction_requests_model_version_ts", "model", "version", "ts"),
    sa.Index("ix_prediction_requests_model_request_id", "model", "request_id"),
    # No index on ts alone: every index makes each insert dearer, and pruning reaches old rows
    # through (model, version, ts).
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
_PRUNE_CHUNK = 1000
"""Database rows deleted per transaction when pruning, so other writers wait only briefly."""
FIXED_COLUMNS = (
    "ts",
    "request_id",
    "row",
    "model",
    "version",
    "prediction",
    "latency_ms",
    UNKNOWN_CATEGORIES,
    ROUTE,
)
"""Columns of an export besides the features and probabilities."""
_LEGACY_TABLE = "predictions"
ROWS_PER_INSERT = 64
"""Requests per multi-row INSERT: 768 parameters, within SQLite's 32,766 (even its old 999) and
PostgreSQL's 65,535."""
WAL_CHECKPOINT_PAGES = 100
"""SQLite's wal_autocheckpoint for the log (its default is 1000)."""


def yield_cpu() -> None:
    """Let another thread or process that waits for this core run before going on.

    The writer's work comes in bursts: every linger period it converts and inserts everything
    queued. On a server with one core, a request arriving mid-burst waited for the burst (2-6
    ms), though the writer held the GIL only briefly: the kernel did not preempt it for the
    woken event loop. Offering the core every ROWS_PER_INSERT requests bounds that wait; when
    nothing else is runnable it returns at once.
    """
    sched_yield = getattr(os, "sched_yield", None)
    if sched_yield is not None:
        sched_yield()
    else:
        time.sleep(0)


class LoggedRequest(NamedTuple):
    """One request as the log stores it, its arrays already encoded (see :func:`encode_json`).

    Field order is the insert's column order.
    """

    ts: float
    """Unix time (UTC)."""
    request_id: str
    model: str
    version: str
    rows: int
    features: str
    inputs: str
    predictions: str
    proba: str | None
    latency_ms: float
    inputs_f64: bytes | None = None
    """Float inputs as raw bytes (:func:`encode_floats`): formatting them as JSON cost the
    writer a third of its time for 100-row requests."""
    unknown_categories: str | None = None
    """Rows holding a category training never saw (:func:`encode_unknown_categories`); None
    when there are none."""
    route: str | None = None
    """Why this version answered (one of ROUTES); None in rows logged before routes were."""


_COLUMNS = LoggedRequest._fields


class PredictionRecord(NamedTuple):
    """One predicted row as readers see it (and as :meth:`PredictionLogStore.write` takes it)."""

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
    unknown_categories: tuple[str, ...] = ()
    """Features whose category in this row training never saw (logged ones, in feature order)."""
    route: str = ""
    """Why this version answered (one of ROUTES; empty in rows logged before routes were)."""


@dataclass(frozen=True, slots=True)
class LoggedWindow:
    """Logged rows of a time window, for drift checks."""

    inputs: pd.DataFrame
    """One column per logged (non-redacted) feature, one row per prediction."""
    predictions: pd.Series
    """The predicted value or label per row (same index)."""
    timestamps: pd.Series
    """Tz-aware UTC datetimes per row."""


def _fallback(value: Any) -> Any:
    """What orjson cannot encode itself: object arrays, numpy scalars, pandas' missing values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def encode_floats(matrix: np.ndarray) -> bytes:
    """A float matrix as the bytes ``inputs_f64`` stores (little-endian float64, row-major)."""
    return np.ascontiguousarray(matrix, dtype="<f8").tobytes()


def encode_unknown_categories(
    unknown: Mapping[str, Sequence[int]],
    features: Sequence[str],
    redact: frozenset[str] = frozenset(),
) -> str | None:
    """What the ``unknown_categories`` column stores: JSON feature -> sorted row positions, in
    the order of ``features`` (the request's), leaving out redacted features and features
    without rows; None when nothing is left."""
    kept = {
        feature: sorted({int(p) for p in unknown[feature]})
        for feature in features
        if feature in unknown and len(unknown[feature]) and feature not in redact
    }
    return encode_json(kept) if kept else None


def _unknown_by_row(text: str | None, rows: int, start: int = 0) -> dict[int, tuple[str, ...]]:
    """A stored ``unknown_categories`` as row (``start`` + position) -> its flagged features,
    in feature order; rows without any are left out, and so are positions past the request."""
    if text is None:
        return {}
    by_row: dict[int, list[str]] = defaultdict(list)
    for feature, positions in orjson.loads(text).items():
        for position in positions:
            if 0 <= position < rows:
                by_row[start + position].append(feature)
    return {row: tuple(features) for row, features in sorted(by_row.items())}


def _input_rows(r: Row[Any], width: int) -> Any:
    """A stored request's inputs, rows x features: an array when stored as bytes, else the
    decoded JSON (None for NaN)."""
    raw = r.inputs_f64
    if raw is not None:
        return np.frombuffer(raw, dtype="<f8").reshape(r.rows, width)
    return orjson.loads(r.inputs)


def encode_json(value: Any) -> str:
    """JSON text for the log: numpy arrays encoded in C (NaN as null), anything odd as text."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=_fallback).decode()


def _unix(moment: datetime) -> float:
    if moment.tzinfo is None:
        raise ValueError("prediction log times must be timezone-aware")
    return moment.timestamp()


class _Expanded(NamedTuple):
    """Logged requests expanded to one entry per predicted row (arrays all of one length)."""

    ts: np.ndarray
    request_id: np.ndarray
    row: np.ndarray
    model: np.ndarray
    version: np.ndarray
    inputs: pd.DataFrame
    predictions: list[Any]
    proba: np.ndarray
    """Rows x widest proba; NaN where a request logged none."""
    latency_ms: np.ndarray
    unknown_categories: dict[int, tuple[str, ...]]
    """Expanded row -> features whose category was unknown there; other rows left out (most
    requests have none, so nothing is built per row for them)."""
    route: np.ndarray


class PredictionLogStore:
    """Writes, reads, prunes and joins feedback to logged predictions. Thread-safe.

    Raises SQLAlchemy's DBAPIError subclasses when the database fails; callers decide whether
    to retry (the writer) or answer with an error.
    """

    def __init__(self, url: str, *, busy_timeout_s: float = 30.0) -> None:
        self.url = url
        self._engine = _make_engine(url, busy_timeout_s)
        self._create_tables()
        self._insert_sql, self._insert_is_positional = _compiled_insert(self._engine)

    @functools.cached_property
    def _bulk_sql(self) -> str:
        """The insert of ROWS_PER_INSERT requests: compiled by the first write that needs it,
        by the writer thread, not at start-up (50-90 ms of a server's cold start)."""
        return _compiled_insert(self._engine, ROWS_PER_INSERT)[0]

    def _create_tables(self) -> None:
        # Several worker processes open the same file at once: one may create a table between
        # another's existence check and its CREATE, so a failed attempt is retried.
        for attempt in range(5):
            try:
                metadata.create_all(self._engine, checkfirst=True)
                break
            except DBAPIError:
                if attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))
        self._add_missing_columns()
        if sa.inspect(self._engine).has_table(_LEGACY_TABLE):
            log.warning(
                "prediction log ignores a table of the old layout",
                extra={"table": _LEGACY_TABLE, "url": safe_url(self.url)},
            )

    def _add_missing_columns(self) -> None:
        """Add the columns an older file lacks (``ADDED_COLUMNS``, all nullable): its rows
        keep what they hold and read as before (JSON inputs, no unknown categories). Another
        process may add them first."""
        table = requests_table.name
        for attempt in range(5):
            present = {c["name"] for c in sa.inspect(self._engine).get_columns(table)}
            missing = [name for name in ADDED_COLUMNS if name not in present]
            if not missing:
                return
            try:
                for name in missing:
                    kind = requests_table.c[name].type.compile(dialect=self._engine.dialect)
                    with self._engine.begin() as conn:
                        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
                    log.info("prediction log table upgraded", extra={"added": name})
                return
            except DBAPIError:  # added meanwhile by another process, or locked: look again
                if attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def close(self) -> None:
        """Release every connection."""
        self._engine.dispose()

    # -- writing -----------------------------------------------------------------------------

    def write_requests(self, requests: Sequence[LoggedRequest]) -> None:
        """Insert ``requests`` in one transaction: one executemany, one database row each."""
        if not requests:
            return
        # The driver's own executemany with a statement compiled once: SQLAlchemy's per-
        # parameter processing would cost more than the insert itself.
        # Requests go ROWS_PER_INSERT to a statement: SQLite's per-statement step (the driver
        # releases and retakes the GIL around each) cost more than the rows' own work.
        bulk = len(requests) - len(requests) % ROWS_PER_INSERT
        with self._engine.begin() as conn:
            if bulk:
                chunks = [
                    requests[i : i + ROWS_PER_INSERT] for i in range(0, bulk, ROWS_PER_INSERT)
                ]
                for i, chunk in enumerate(chunks):
                    if i:
                        yield_cpu()  # see yield_cpu: the event loop may be waiting for the core
                    conn.exec_driver_sql(self._bulk_sql, self._params(chunk))
            if bulk < len(requests):
                rest = requests[bulk:]
                conn.exec_driver_sql(
                    self._insert_sql,
                    rest if self._insert_is_positional else [r._asdict() for r in rest],
                )

    def _params(self, chunk: Sequence[LoggedRequest]) -> Any:
        """One multi-row insert's parameters: a flat tuple, or a mapping of numbered names."""
        if self._insert_is_positional:
            return tuple(itertools.chain.from_iterable(chunk))
        return {
            f"{name}_{i}": value
            for i, r in enumerate(chunk)
            for name, value in zip(_COLUMNS, r, strict=True)
        }

    def write(self, records: Sequence[PredictionRecord]) -> None:
        """Insert per-row ``records``, the rows of each request grouped into one request.

        Raises ValueError unless each request's records are its rows 0..n-1 in order, with one
        time and the same features.
        """
        grouped: dict[tuple[str, str, str], list[PredictionRecord]] = {}
        for r in records:
            grouped.setdefault((r.model, r.version, r.request_id), []).append(r)
        self.write_requests([_request_of(rows) for rows in grouped.values()])

    def prune(self, older_than: datetime, limit: int | None = None) -> int:
        """Delete requests (and feedback received) before ``older_than``, at most about
        ``limit`` database rows (None: all); return how many. A short transaction per chunk,
        so other writers wait only briefly."""
        cutoff = _unix(older_than)
        p, f = requests_table, feedback_table
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
        """Logged predicted rows, of one model or of all."""
        t = requests_table
        query = sa.select(sa.func.coalesce(sa.func.sum(t.c.rows), 0))
        if model is not None:
            query = query.where(t.c.model == model)
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
        expanded = _expand(self._requests(model, version, since, until, limit), limit)
        inputs = expanded.inputs
        return LoggedWindow(
            inputs=inputs,
            predictions=pd.Series(
                expanded.predictions, index=inputs.index, dtype=object
            ).infer_objects(),
            timestamps=pd.Series(_datetimes(expanded.ts), index=inputs.index),
        )

    def read_records(
        self,
        model: str,
        version: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[PredictionRecord]:
        """Logged rows of ``model`` in [since, until), oldest first, one record per predicted
        row (NaN inputs read back as None; ``unknown_categories`` names the features whose
        category was unknown in that row, empty for most)."""
        records: list[PredictionRecord] = []
        for r in self._requests(model, version, since, until):
            names = orjson.loads(r.features)
            inputs = _input_rows(r, len(names))
            if isinstance(inputs, np.ndarray):  # NaN reads back as None either way
                inputs = [[None if math.isnan(v) else v for v in row] for row in inputs.tolist()]
            predictions = orjson.loads(r.predictions)
            proba = None if r.proba is None else orjson.loads(r.proba)
            ts = datetime.fromtimestamp(r.ts, UTC)
            unknown = _unknown_by_row(r.unknown_categories, r.rows)
            records.extend(
                PredictionRecord(
                    ts=ts,
                    request_id=r.request_id,
                    row=index,
                    model=r.model,
                    version=r.version,
                    inputs=dict(zip(names, inputs[index], strict=True)),
                    prediction=predictions[index],
                    proba=None if proba is None else proba[index],
                    latency_ms=r.latency_ms,
                    unknown_categories=unknown.get(index, ()),
                    route=r.route or "",
                )
                for index in range(r.rows)
            )
        return records

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
        prediction, ``proba_CLASS`` per class (``proba_0``... without ``classes``), latency_ms,
        unknown_categories.

        ``unknown_categories`` is text, the same in CSV and Parquet: the features whose
        category training never saw in that row (scored under ``unknown_categories: accept``),
        comma-separated in the request's feature order; empty for the other rows.
        """
        expanded = _expand(self._requests(model, version, since, until))
        features = expanded.inputs
        features.columns = [f"input_{c}" if c in FIXED_COLUMNS else c for c in features.columns]
        frame = pd.DataFrame(
            {
                "ts": _datetimes(expanded.ts),
                "request_id": pd.Series(expanded.request_id, dtype=object),
                "row": pd.array(expanded.row, dtype="int64"),
                "model": pd.Series(expanded.model, dtype=object),
                "version": pd.Series(expanded.version, dtype=object),
            }
        )
        frame = pd.concat([frame, features], axis=1)
        frame["prediction"] = pd.Series(expanded.predictions, dtype=object).infer_objects()
        width = expanded.proba.shape[1]
        names = (
            [str(c) for c in classes] if len(classes) == width else [str(i) for i in range(width)]
        )
        for index, name in enumerate(names):
            frame[f"proba_{name}"] = expanded.proba[:, index]
        frame["latency_ms"] = expanded.latency_ms
        flags = [""] * len(frame)
        for row, flagged in expanded.unknown_categories.items():
            flags[row] = ",".join(flagged)
        frame[UNKNOWN_CATEGORIES] = pd.Series(flags, dtype=object)
        frame[ROUTE] = pd.Series(expanded.route, dtype=object)
        return frame

    def _requests(
        self,
        model: str,
        version: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int | None = None,
    ) -> list[Row[Any]]:
        """Requests of the window, oldest first; with ``limit``, only the newest requests that
        hold the newest ``limit`` rows."""
        t = requests_table
        where = self._window(model, version, since, until)
        if limit is None:
            with self._engine.connect() as conn:
                return list(conn.execute(sa.select(t).where(*where).order_by(t.c.ts, t.c.id)))
        # Every request holds a row at least, so ``limit`` requests always suffice.
        query = sa.select(t).where(*where).order_by(t.c.ts.desc(), t.c.id.desc()).limit(limit)
        newest: list[Row[Any]] = []
        rows = 0
        with self._engine.connect() as conn:
            for request in conn.execute(query):
                newest.append(request)
                rows += request.rows
                if rows >= limit:
                    break
        newest.reverse()
        return newest

    @staticmethod
    def _window(
        model: str, version: str | None, since: datetime | None, until: datetime | None
    ) -> list[sa.ColumnElement[bool]]:
        t = requests_table
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
        (no such request, or a row past its end) are not stored; their request ids come back
        in ``unknown``.
        """
        received = _unix(now or datetime.now(UTC))
        with self._engine.begin() as conn:
            found = _logged_rows_by_request(conn, model, items)
            joined: dict[tuple[str, int], FeedbackItem] = {}
            unmatched: list[FeedbackItem] = []
            by_version: dict[str, int] = defaultdict(int)
            for item in items:
                versions = [v for rows, v in found.get(item.request_id, ()) if 0 <= item.row < rows]
                if not versions:
                    unmatched.append(item)
                    continue
                joined[(item.request_id, item.row)] = item  # the last label given wins
                for version in versions:
                    by_version[version] += 1
            if joined:
                _replace_labels(conn, model, list(joined.values()), received)
        return FeedbackResult(joined_by_version=dict(by_version), unmatched=unmatched)

    def online_metrics(
        self, model: str, since: datetime | None, tasks: dict[str, Task] | None = None
    ) -> dict[str, OnlineMetrics]:
        """Per version, the scores of predictions made since ``since`` that have a label.

        ``tasks`` gives each version's task; versions missing from it are guessed from their
        predictions (text labels mean classification).
        """
        p, f = requests_table, feedback_table
        query = (
            sa.select(p.c.id, p.c.version, p.c.predictions, f.c.row, f.c.label)
            .join(
                f,
                sa.and_(
                    f.c.model == p.c.model,
                    f.c.request_id == p.c.request_id,
                    f.c.row < p.c.rows,
                ),
            )
            .where(p.c.model == model, f.c.row >= 0)
        )
        if since is not None:
            query = query.where(p.c.ts >= _unix(since))
        pairs: dict[str, tuple[list[Any], list[Any]]] = defaultdict(lambda: ([], []))
        decoded: dict[int, list[Any]] = {}  # a request's predictions, parsed once for all labels
        with self._engine.connect() as conn:
            for request, version, predictions, row, label in conn.execute(query):
                values = decoded.get(request)
                if values is None:
                    values = decoded[request] = orjson.loads(predictions)
                predicted, labels = pairs[version]
                predicted.append(values[row])
                labels.append(orjson.loads(label))
        known = tasks or {}
        return {
            version: score(known.get(version) or guess_task(predicted), predicted, labels)
            for version, (predicted, labels) in sorted(pairs.items())
        }


def _logged_rows_by_request(
    conn: Connection, model: str, items: Sequence[FeedbackItem]
) -> dict[str, list[tuple[int, str]]]:
    """(rows, version) of every logged request of ``model`` the items name, by request id."""
    t = requests_table
    found: dict[str, list[tuple[int, str]]] = defaultdict(list)
    ids = list(dict.fromkeys(item.request_id for item in items))
    for chunk in _chunks(ids, _IN_CHUNK):
        query = sa.select(t.c.request_id, t.c.rows, t.c.version).where(
            t.c.model == model, t.c.request_id.in_(chunk)
        )
        for request_id, rows, version in conn.execute(query):
            found[request_id].append((rows, version))
    return found


def _replace_labels(
    conn: Connection, model: str, items: list[FeedbackItem], received: float
) -> None:
    """Store the items' labels, replacing those the same rows had."""
    f = feedback_table
    conn.execute(
        f.delete().where(
            f.c.model == sa.bindparam("m"),
            f.c.request_id == sa.bindparam("r"),
            f.c.row == sa.bindparam("n"),
        ),
        [{"m": model, "r": item.request_id, "n": item.row} for item in items],
    )
    conn.execute(
        f.insert(),
        [
            {
                "model": model,
                "request_id": item.request_id,
                "row": item.row,
                "label": encode_json(item.label),
                "ts": received,
            }
            for item in items
        ],
    )


def _request_of(records: list[PredictionRecord]) -> LoggedRequest:
    """One request from its per-row records (see :meth:`PredictionLogStore.write`)."""
    first = records[0]
    features = list(first.inputs)
    for index, r in enumerate(records):
        if r.row != index or r.ts != first.ts or list(r.inputs) != features:
            raise ValueError(
                f"records of request {first.request_id!r} must be its rows 0..n-1 in order,"
                " with one time and the same features"
            )
    probas = [r.proba for r in records]
    unknown: dict[str, list[int]] = defaultdict(list)
    for r in records:
        for feature in r.unknown_categories:
            unknown[feature].append(r.row)
    return LoggedRequest(
        ts=_unix(first.ts),
        request_id=first.request_id,
        model=first.model,
        version=first.version,
        rows=len(records),
        features=encode_json(features),
        inputs=encode_json([list(r.inputs.values()) for r in records]),
        predictions=encode_json([r.prediction for r in records]),
        proba=None if all(p is None for p in probas) else encode_json(probas),
        latency_ms=first.latency_ms,
        unknown_categories=encode_unknown_categories(unknown, features),
        route=first.route or None,
    )


def _expand(requests: Sequence[Row[Any]], last: int | None = None) -> _Expanded:
    """One entry per predicted row of ``requests`` (only the last ``last`` rows when given)."""
    counts = np.fromiter((r.rows for r in requests), dtype=np.int64, count=len(requests))
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts

    def repeated(values: list[Any], dtype: Any = object) -> np.ndarray:
        return np.repeat(np.asarray(values, dtype=dtype), counts)

    predictions: list[Any] = []
    probas: list[Any] = []
    unknown: dict[int, tuple[str, ...]] = {}
    for r, start in zip(requests, starts.tolist(), strict=True):
        predictions.extend(orjson.loads(r.predictions))
        probas.append(None if r.proba is None else orjson.loads(r.proba))
        if r.unknown_categories is not None:
            unknown.update(_unknown_by_row(r.unknown_categories, r.rows, start))
    expanded = _Expanded(
        ts=repeated([r.ts for r in requests], np.float64),
        request_id=repeated([r.request_id for r in requests]),
        row=np.arange(total, dtype=np.int64) - np.repeat(starts, counts),
        model=repeated([r.model for r in requests]),
        version=repeated([r.version for r in requests]),
        inputs=_input_frame(requests, total),
        predictions=predictions,
        proba=_proba_matrix(probas, starts, total),
        latency_ms=repeated([r.latency_ms for r in requests], np.float64),
        unknown_categories=unknown,
        route=repeated([r.route or "" for r in requests]),
    )
    if last is None or total <= last:
        return expanded
    skip = total - last
    return _Expanded(
        ts=expanded.ts[skip:],
        request_id=expanded.request_id[skip:],
        row=expanded.row[skip:],
        model=expanded.model[skip:],
        version=expanded.version[skip:],
        inputs=expanded.inputs.iloc[skip:].reset_index(drop=True),
        predictions=expanded.predictions[skip:],
        proba=expanded.proba[skip:],
        latency_ms=expanded.latency_ms[skip:],
        unknown_categories={
            row - skip: features for row, features in unknown.items() if row >= skip
        },
        route=expanded.route[skip:],
    )


def _input_frame(requests: Sequence[Row[Any]], total: int) -> pd.DataFrame:
    """Every request's inputs in one frame: a column per feature any request logged, in the
    order they first appear; None (NaN in numeric columns) where a request lacks one."""
    columns: dict[str, list[Any]] = {}
    names_of: dict[str, list[str]] = {}  # requests of one model share a few feature lists
    filled = 0
    for r in requests:
        names = names_of.get(r.features)
        if names is None:
            names = names_of[r.features] = orjson.loads(r.features)
        matrix = _input_rows(r, len(names))
        by_column = (
            matrix.T.tolist() if isinstance(matrix, np.ndarray) else zip(*matrix, strict=True)
        )
        for name, values in zip(names, by_column if names else (), strict=True):
            column = columns.get(name)
            if column is None:
                column = columns[name] = [None] * filled
            column.extend(values)
        filled += r.rows
        for column in columns.values():
            if len(column) < filled:
                column.extend([None] * (filled - len(column)))
    return pd.DataFrame(columns, index=pd.RangeIndex(total))


def _proba_matrix(probas: list[Any], starts: np.ndarray, total: int) -> np.ndarray:
    """Rows x widest probabilities, NaN where a request (or a row) logged none."""
    width = max((len(row) for p in probas if p for row in p if row is not None), default=0)
    matrix = np.full((total, width), np.nan)
    for proba, start in zip(probas, starts.tolist(), strict=True):
        if proba is None:
            continue
        for offset, row in enumerate(proba):
            if row is not None:
                matrix[start + offset, : len(row)] = row
    return matrix


def _compiled_insert(engine: Engine, rows: int | None = None) -> tuple[str, bool]:
    """The insert of one :class:`LoggedRequest` (or of ``rows`` of them, parameters named
    ``column_i``) as the driver's SQL, and whether it takes a tuple (positional paramstyle)
    rather than a mapping."""
    if rows is None:
        names: tuple[str, ...] = _COLUMNS
        statement = requests_table.insert().values({name: sa.bindparam(name) for name in names})
    else:
        names = tuple(f"{name}_{i}" for i in range(rows) for name in _COLUMNS)
        statement = requests_table.insert().values(
            [{name: sa.bindparam(f"{name}_{i}") for name in _COLUMNS} for i in range(rows)]
        )
    compiled = statement.compile(dialect=engine.dialect)
    if compiled.positional and tuple(compiled.positiontup or ()) != names:
        raise RuntimeError("prediction log insert parameters are out of order")  # a bug
    return str(compiled), compiled.positional


def _datetimes(unix_s: np.ndarray) -> pd.DatetimeIndex:
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
        # Checkpoints (copying the WAL into the database) run inside a commit, in one go: at
        # SQLite's default of 1000 pages one took long enough to delay requests on a server's
        # only core by milliseconds. 100 pages spreads the same copying into short steps.
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        # SQLite's default synchronous=FULL stays: every commit is fsynced, so a power cut loses
        # no acknowledged prediction either. NORMAL saved only 3-14 % of the writer's time.
        cursor.close()

    return engine


def safe_url(url: str) -> str:
    """The URL without its password, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)
