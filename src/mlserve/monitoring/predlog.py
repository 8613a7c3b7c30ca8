"""The prediction log: requests hand their predictions to a bounded queue; one thread writes them.

The request path pays for one small object and a lock per request (never per row): turning
inputs into JSON and writing them (one database row per request) happens in the writer thread,
in batches.
Backpressure is counted in rows. When the queue is full, ``block`` makes requests wait for room
(off the event loop, up to a deadline, then 503), ``drop`` drops their records, counts them and
says so in the log (predlog_drops.py). A database that is down only stops the writer: it retries
the same batch with backoff (one line per attempt, and one when writes resume) while the queue
fills behind it, so nothing queued is lost to an outage shorter than the queue. Past that bound
records are dropped and counted even in ``block`` mode: blocking paces requests to a writer that
is slow, but a writer that cannot write at all would stop serving, and loaded models must keep
answering through a database outage.
``flush`` waits until what was queued so far is in the database; ``close`` writes everything
queued and stops, so every acknowledged prediction is logged before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlserve.errors import Overloaded
from mlserve.monitoring.metrics import MonitoringMetrics
from mlserve.monitoring.predlog_drops import DropReport
from mlserve.monitoring.predlog_store import (
    ROWS_PER_INSERT,
    LoggedRequest,
    LoggedWindow,
    PredictionLogStore,
    PredictionRecord,
    encode_floats,
    encode_json,
    encode_unknown_categories,
    safe_url,
    yield_cpu,
)

__all__ = [
    "LoggedRequest",
    "LoggedWindow",
    "PendingPrediction",
    "PredictionLogStore",
    "PredictionLogWriter",
    "PredictionRecord",
    "WriterConfig",
    "to_request",
]

log = logging.getLogger(__name__)


PRUNE_SLICE_ROWS = 2000
"""Most old database rows (requests, feedback) the writer deletes between two batches."""


@dataclass(slots=True)
class PendingPrediction:
    """One answered request as the request path hands it over; converted off the hot path.

    ``inputs`` and the arrays are the request's own objects (not copies): nobody mutates them
    after the prediction.
    """

    request_id: str
    ts: float
    """Unix time (UTC)."""
    model: str
    version: str
    inputs: np.ndarray | pd.DataFrame
    feature_names: Sequence[str]
    predictions: np.ndarray | None
    """None when only probabilities were asked for: the top class is logged then."""
    proba: np.ndarray | None
    classes: Sequence[str]
    latency_ms: float
    unknown_categories: Mapping[str, Sequence[int]] = field(default_factory=dict)
    """Rows (positions in this request) scored with a category training never saw, by
    feature: accepted under ``unknown_categories: accept``; stored with the request."""
    route: str = ""
    """Why this version answered (one of ``ROUTES``); empty when nothing said."""

    @property
    def rows(self) -> int:
        """Predicted rows."""
        return len(self.inputs)


DEPTH_EVERY = 64
"""The request path sets the queue-depth gauge every this many records (the writer sets it
after every batch)."""

DOWN_AFTER_FAILURES = 2
"""Consecutive failed writes after which the database counts as down (one failure may be a
lock held a moment too long by another writer of the same SQLite file)."""


@dataclass(frozen=True, slots=True)
class WriterConfig:
    """How the writer queues, batches, samples, redacts and prunes."""

    queue_rows: int = 20_000
    batch_rows: int = 1000
    when_full: Literal["block", "drop"] = "block"
    sample_rate: float = 1.0
    redact: frozenset[str] = frozenset()
    retention_s: float = 30 * 86_400.0
    prune_interval_s: float = 3600.0
    linger_s: float = 0.2
    """How long the writer waits for a batch to fill before writing what it has: each
    transaction costs about as much as 50 rows, so small batches are dear."""
    block_timeout_s: float = 30.0
    """How long a request waits for room in a full queue before it is answered 503."""
    close_timeout_s: float = 60.0
    """How long ``close`` keeps retrying a failing database before giving records up."""
    retry_max_s: float = 10.0


@functools.lru_cache(maxsize=256)
def _kept(
    names: tuple[str, ...], redact: frozenset[str]
) -> tuple[list[int] | None, list[str], str]:
    """Positions (None: all), names and JSON names of the features that may be logged (the
    same for every request of a model)."""
    kept = [name for name in names if name not in redact]
    keep = None if len(kept) == len(names) else [i for i, n in enumerate(names) if n not in redact]
    return keep, kept, encode_json(kept)


def to_request(item: PendingPrediction, redact: frozenset[str]) -> LoggedRequest:
    """``item`` as one logged request, without the redacted features.

    A handful of C-level calls per request, none per row: redaction selects columns, and a
    float matrix goes to JSON in one orjson call. Unknown categories are encoded only when a
    request has some (a redacted feature's flags are left out with its values).
    """
    keep, kept, kept_json = _kept(tuple(item.feature_names), redact)
    inputs = item.inputs
    matrix: Any
    if isinstance(inputs, pd.DataFrame):
        matrix = _frame_matrix(inputs, kept)
    else:
        matrix = inputs if keep is None else inputs[:, keep]
    # Float matrices (the usual case) go as raw bytes: formatting floats is the dear part.
    floats = bool(kept) and isinstance(matrix, np.ndarray) and matrix.dtype.kind == "f"
    predicted: Any
    if item.predictions is not None:
        predicted = item.predictions
    elif item.proba is not None and item.classes:
        predicted = np.asarray(item.classes, dtype=object)[np.argmax(item.proba, axis=1)]
    else:
        predicted = [None] * item.rows
    return LoggedRequest(
        ts=item.ts,
        request_id=item.request_id,
        model=item.model,
        version=item.version,
        rows=item.rows,
        features=kept_json,
        inputs="" if floats else encode_json(matrix),
        predictions=encode_json(predicted),
        proba=None if item.proba is None else encode_json(item.proba),
        latency_ms=item.latency_ms,
        inputs_f64=encode_floats(matrix) if floats else None,
        unknown_categories=(
            encode_unknown_categories(item.unknown_categories, item.feature_names, redact)
            if item.unknown_categories
            else None
        ),
        route=item.route or None,
    )


def _frame_matrix(frame: pd.DataFrame, kept: list[str]) -> Any:
    """The kept columns of ``frame`` as something orjson encodes as rows x features."""
    if not kept:
        return [[]] * len(frame)
    selected = frame if list(frame.columns) == kept else frame[kept]
    if all(dtype.kind == "f" for dtype in selected.dtypes):
        return selected.to_numpy(dtype=np.float64)  # encoded in C, NaN as null
    # Mixed columns: pandas builds the Python values column by column, orjson encodes them.
    return selected.to_numpy(dtype=object).tolist()


class PredictionLogWriter:
    """A bounded queue of pending predictions and the one thread that writes them.

    ``offer`` and ``put`` are for the event loop; ``flush`` and ``close`` block, so call them
    in a thread (``asyncio.to_thread``). Database errors never escape the writer thread: it logs
    them and retries the same records with backoff while the queue fills up behind them.
    """

    def __init__(
        self, store: PredictionLogStore, config: WriterConfig, metrics: MonitoringMetrics
    ) -> None:
        self._store = store
        self._config = config
        self._metrics = metrics
        self._cond = threading.Condition()
        self._items: deque[tuple[int, PendingPrediction]] = deque()
        self._rows = 0
        self._enqueued_seq = 0
        self._written_seq = 0
        self._flush_seq = 0
        self._idle = False
        self._closing = False
        self._close_deadline = 0.0
        self._space_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_prune = 0.0
        self._everything = config.sample_rate >= 1.0
        self._depth = metrics.log_queue_depth
        self._drops = DropReport(config.queue_rows)
        self._writing = 0
        """Rows taken from the queue and not yet written (part of the depth)."""
        self._database_down = False
        """True from a failed write until one succeeds: a full queue then drops, never blocks."""
        self._queue_rows = config.queue_rows
        self._batch_rows = config.batch_rows

    # -- the request path ------------------------------------------------------------------------

    def is_sampled(self) -> bool:
        """Whether to log this request (decided per request, by the sample rate)."""
        return self._everything or random.random() < self._config.sample_rate

    def offer(self, item: PendingPrediction) -> bool:
        """Queue ``item`` if there is room, or drop it when configured; never blocks.

        False means the queue is full in ``block`` mode: await :meth:`put` then.
        """
        rows = len(item.inputs)
        with self._cond:
            if self._closing:
                self._lose(item, "closed")
                return True
            fits = self._rows + rows <= self._queue_rows or not self._items
            if fits:
                self._append(item, rows)
        if fits:
            if self._drops.is_dropping:
                self._drops.took_one()
            return True
        if self._config.when_full == "drop" or self._database_down:
            self._metrics.log_dropped.labels(item.model, item.version).inc(rows)
            self._drops.dropped(rows)
            return True
        return False

    async def put(self, item: PendingPrediction) -> None:
        """Queue ``item``, waiting (without blocking the loop) for room in a full queue.

        Raises Overloaded when no room came within ``block_timeout_s``; drops and counts the
        record instead while the database is down.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.block_timeout_s
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            with self._cond:
                if self._closing:
                    self._lose(item, "closed")
                    return
                if self._rows + item.rows <= self._config.queue_rows or not self._items:
                    self._append(item, item.rows)
                    return
                if self._database_down:  # the writer cannot make room: waiting stops serving
                    self._metrics.log_dropped.labels(item.model, item.version).inc(item.rows)
                    self._drops.dropped(item.rows)
                    return
                self._space_waiters.append((loop, waiter))
            remaining = deadline - loop.time()
            try:
                await asyncio.wait_for(waiter, max(remaining, 0.0))
            except TimeoutError:
                raise Overloaded(
                    "the prediction log is not keeping up; retry shortly", retry_after_s=1.0
                ) from None

    def _append(self, item: PendingPrediction, rows: int) -> None:
        """Under the lock: queue the item and wake the writer if it sleeps or a batch is full."""
        seq = self._enqueued_seq = self._enqueued_seq + 1
        self._items.append((seq, item))
        self._rows += rows
        # Set here too, not only by the writer: a write stuck on a locked database must not
        # hide the backlog growing behind it. Every DEPTH_EVERY records: a gauge's lock a
        # request costs more than a backlog 64 records stale.
        if not seq % DEPTH_EVERY:
            self._depth.set(self._rows + self._writing)
        if self._idle or self._rows >= self._batch_rows:
            self._cond.notify_all()

    def _lose(self, item: PendingPrediction, reason: str) -> None:
        self._metrics.log_dropped.labels(item.model, item.version).inc(item.rows)
        log.warning(
            "prediction log record dropped",
            extra={"reason": reason, "rows": item.rows, "model": item.model},
        )

    # -- control ---------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True while the writer thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def queued_rows(self) -> int:
        """Rows waiting to be written (those being written included)."""
        return self._rows + self._writing

    def start(self) -> None:
        """Start the writer thread (which prunes old records first)."""
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything queued before this call is in the database; False on timeout."""
        with self._cond:
            target = self._enqueued_seq
            if self._written_seq >= target:
                return True
            self._flush_seq = max(self._flush_seq, target)
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: self._written_seq >= target or not self.is_running, timeout_s
            ) and (self._written_seq >= target)

    def close(self) -> None:
        """Write everything queued, then stop the thread. Later items are dropped and counted.

        If the database keeps failing, records still unwritten after ``close_timeout_s`` are
        given up (logged as an error and counted as dropped).
        """
        with self._cond:
            self._closing = True
            self._close_deadline = time.monotonic() + self._config.close_timeout_s
            self._cond.notify_all()
        self._wakeup.set()  # cut a retry's backoff short
        if self._thread is None:
            self._run()  # never started: drain in this thread
        else:
            self._thread.join(self._config.close_timeout_s + 30)
        self._wake_space_waiters()

    # -- the writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        log.info("prediction log started", extra={"url": safe_url(self._store.url)})
        while True:
            try:
                self._prune_when_due()
                batch, last_seq = self._next_batch()
                if batch is None:
                    break
                if batch:
                    self._write(batch, last_seq)
            except Exception:  # the writer must outlive any bug; never spin on one
                log.exception("prediction log writer error")
                time.sleep(0.5)
        self._depth.set(0)
        log.info("prediction log stopped")

    def _next_batch(self) -> tuple[list[PendingPrediction] | None, int]:
        """Wait for work, letting a batch fill for ``linger_s``; empty when a prune is due,
        None once closed and drained."""
        config = self._config
        with self._cond:
            while not self._items:
                if self._closing:
                    return None, 0
                if time.monotonic() >= self._next_prune:
                    return [], 0
                self._idle = True
                self._cond.wait(min(self._next_prune - time.monotonic(), 60.0))
                self._idle = False
            if self._rows < config.batch_rows and not self._is_urgent():
                self._cond.wait_for(
                    lambda: self._rows >= config.batch_rows or self._is_urgent(), config.linger_s
                )
            batch: list[PendingPrediction] = []
            rows, last_seq = 0, 0
            while self._items and (not batch or rows + self._items[0][1].rows <= config.batch_rows):
                last_seq, item = self._items.popleft()
                batch.append(item)
                rows += item.rows
            self._rows -= rows
            self._writing = rows
            depth = self._rows + rows
        self._depth.set(depth)
        self._wake_space_waiters()
        return batch, last_seq

    def _is_urgent(self) -> bool:
        return self._closing or self._flush_seq > self._written_seq

    def _write(self, batch: list[PendingPrediction], last_seq: int) -> None:
        """Write one batch, retrying with backoff until it lands or ``close`` gives up."""
        requests: list[LoggedRequest] = []
        for number, item in enumerate(batch):
            if number and not number % ROWS_PER_INSERT:
                yield_cpu()  # the conversion is a burst too (see yield_cpu)
            if not item.rows:
                continue  # nothing was predicted, so there is nothing to log
            try:
                requests.append(to_request(item, self._config.redact))
            except Exception:  # a bug in conversion loses this request's rows, not the batch
                log.exception("prediction log record unreadable", extra={"model": item.model})
                self._metrics.log_dropped.labels(item.model, item.version).inc(item.rows)
        if self._write_with_retry(requests):
            for (model, version), rows in _rows_by_version(requests).items():
                self._metrics.log_written.labels(model, version).inc(rows)
        with self._cond:
            self._written_seq = max(self._written_seq, last_seq)
            self._writing = 0
            self._cond.notify_all()
            self._depth.set(self._rows)

    def _write_with_retry(self, requests: list[LoggedRequest]) -> bool:
        """True once written; False when closing ran out of time (the rows are counted lost)."""
        delay = 0.1
        failures = 0
        while True:
            try:
                self._store.write_requests(requests)
                self._database_down = False
                if failures:
                    log.info(
                        "prediction log writes resumed",
                        extra={"failed_writes": failures, "queued_rows": self.queued_rows},
                    )
                return True
            except Exception as exc:  # database down or locked: keep the requests and retry
                if self._closing and time.monotonic() > self._close_deadline:
                    self._give_up(requests, exc)
                    return False
                failures += 1
                if failures == DOWN_AFTER_FAILURES:
                    self._database_down = True
                    self._wake_space_waiters()  # requests waiting for room drop records now
                log.warning(
                    "prediction log write failed",
                    extra={
                        "error": _describe(exc),
                        "records": sum(r.rows for r in requests),
                        "queued_rows": self.queued_rows,
                        "retry_in_s": delay,
                    },
                )
                if self._wakeup.wait(delay):
                    self._wakeup.clear()  # woken by close: retry now, then back off again
                delay = min(delay * 2, self._config.retry_max_s)

    def _give_up(self, requests: list[LoggedRequest], exc: Exception) -> None:
        log.error(
            "prediction log records lost",
            extra={"records": sum(r.rows for r in requests), "error": _describe(exc)},
        )
        for (model, version), rows in _rows_by_version(requests).items():
            self._metrics.log_dropped.labels(model, version).inc(rows)

    def _prune_when_due(self) -> None:
        """Prune at start and every ``prune_interval_s``, a slice at a time: a backlog of old
        rows (after a long stop) must not keep the writer from new predictions for long."""
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + self._config.prune_interval_s
        cutoff = datetime.now(UTC) - timedelta(seconds=self._config.retention_s)
        try:
            deleted = self._store.prune(cutoff, limit=PRUNE_SLICE_ROWS)
        except Exception as exc:  # a failed prune is retried at the next interval
            log.warning("prediction log prune failed", extra={"error": _describe(exc)})
            return
        if deleted >= PRUNE_SLICE_ROWS:
            self._next_prune = now  # more to do: another slice after the next batch
        if deleted:
            log.info("prediction log pruned", extra={"deleted": deleted})

    def _wake_space_waiters(self) -> None:
        with self._cond:
            waiters, self._space_waiters = self._space_waiters, []
        for loop, waiter in waiters:
            with contextlib.suppress(RuntimeError):  # that loop closed: nobody waits any more
                loop.call_soon_threadsafe(_release, waiter)


def _rows_by_version(requests: list[LoggedRequest]) -> Counter[tuple[str, str]]:
    """Predicted rows per (model, version)."""
    rows: Counter[tuple[str, str]] = Counter()
    for r in requests:
        rows[(r.model, r.version)] += r.rows
    return rows


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _describe(exc: Exception) -> str:
    """An error's type and first line, short enough for a log field."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"[:300]
