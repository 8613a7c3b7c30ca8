"""Logs with request context, as JSON lines or text lines for people; installed only by the
CLI."""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import os
import random
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

import orjson


def new_request_id() -> str:
    """A new request id: 32 hex digits, the first 12 the Unix time in milliseconds.

    Ids are time-ordered, like UUIDv7: the prediction log indexes requests by (model, request
    id) for feedback joins, and random ids put every insert on a random page of that index. In
    a log of 300,000 requests a one-row insert then cost 39 µs of CPU; with ordered ids, 7 µs.
    80 random bits per millisecond keep them unique across processes. Not ``uuid``: a request
    id needs uniqueness, not secrecy, and ``os.urandom`` is a system call.
    """
    return f"{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
model_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("model", default=None)
version_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("version", default=None)

# Attributes every LogRecord has; anything else was passed through `extra=` and is a field.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object: timestamp, level, message, context, extra fields."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON line."""
        entry: dict[str, Any] = {
            "timestamp": self._timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (("request_id", request_id_var), ("model", model_var)):
            value = var.get()
            if value is not None:
                entry[key] = value
        version = version_var.get()
        if version is not None:
            entry["version"] = version
        fields = record.__dict__
        for key in fields.keys() - _STANDARD:  # a set difference in C: every access log pays it
            if not key.startswith("_"):
                entry[key] = fields[key]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()

    def format_deferred(self, deferred: Deferred) -> str:
        """The line :meth:`format` would give an INFO record of ``deferred`` (see ``log_info``):
        its ``fields`` are the record's ``extra``, so they win over the request context."""
        created, logger, message, request_id, fields = deferred
        entry: dict[str, Any] = {
            "timestamp": self._timestamp(created),
            "level": "INFO",
            "logger": logger,
            "message": message,
        }
        if request_id is not None:
            entry["request_id"] = request_id
        entry.update(fields)
        return orjson.dumps(entry, default=str).decode()

    def _timestamp(self, created: float) -> str:
        """ISO 8601 in UTC with milliseconds; the part up to the second is formatted once."""
        second = int(created)
        micros = round((created - second) * 1_000_000)  # rounded as datetime.fromtimestamp does
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._second_text}.{micros // 1000:03d}+00:00"


class TextFormatter(logging.Formatter):
    """A line for people: time, level, logger and message, then the same fields JSON lines carry
    (request context and ``extra=``) as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line (a traceback, when there is one, below it)."""
        line = super().format(record)
        pairs = [
            f"{key}={var.get()}"
            for key, var in (
                ("request_id", request_id_var),
                ("model", model_var),
                ("version", version_var),
            )
            if var.get() is not None
        ]
        fields = record.__dict__
        extra = sorted(key for key in fields.keys() - _STANDARD if not key.startswith("_"))
        pairs += [f"{key}={fields[key]}" for key in extra]
        if not pairs:
            return line
        head, newline, rest = line.partition("\n")
        return f"{head}  {' '.join(pairs)}{newline}{rest}"


Deferred = tuple[float, str, str, str | None, dict[str, Any]]
"""An INFO line to format later: (time.time(), logger name, message, request id, fields)."""

DEFERRED_PER_WRITE = 128
"""Deferred lines formatted per write; the timer thread offers the core between two writes."""


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler whose lines reach the stream in batches: at most ``interval_s`` late, at
    once for warnings and errors, and at exit (logging.shutdown flushes every handler).

    Python's stderr is line-buffered, so a StreamHandler on it makes one write system call a
    line, and the access log writes a line a request: measured 25-40 us of a ~370 us one-row
    request on one core (bench/results/serving.md). Writing through a buffer the size of many
    lines and flushing from a timer thread takes the system call off the request path.

    With a JSON formatter it also takes INFO lines to format later (:func:`log_info`, used by
    the access log): the request path then pays for a tuple, not for a LogRecord, the
    formatter and the handler's lock, and the timer thread formats the lines in a batch. Lines
    keep their order: a line logged normally first writes every deferred line before it.
    """

    def __init__(self, stream: Any, interval_s: float = 0.2) -> None:
        super().__init__(_buffered(stream))
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._deferred: deque[Deferred] = deque()
        threading.Thread(target=self._flush_every_interval, name="log-flush", daemon=True).start()

    def takes_deferred(self, logger: logging.Logger) -> bool:
        """True when an INFO line of ``logger`` would reach only this handler, unfiltered, and
        JSON-formatted: then :meth:`defer` gives the same line as ``logger.info``."""
        if not (
            isinstance(self.formatter, JsonFormatter)
            and not self.filters
            and self.level <= logging.INFO
            and logger.isEnabledFor(logging.INFO)
            and not logger.filters
        ):
            return False
        current: logging.Logger | None = logger
        while current is not None:
            if current.handlers:
                return current.handlers == [self] and current.parent is None
            if not current.propagate:
                return False
            current = current.parent
        return False

    @property
    def deferred_lines(self) -> int:
        """Deferred lines not yet written."""
        return len(self._deferred)

    def defer(self, deferred: Deferred) -> None:
        """Queue a line to format at the next flush (thread-safe: deque appends are atomic)."""
        self._deferred.append(deferred)

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record (after any deferred lines); flush only for a warning or worse."""
        try:
            if self._deferred:
                self._write_deferred()
            self.stream.write(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING:
                self.stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Write the deferred lines, then flush the stream."""
        self._drain(offer_core=False)
        super().flush()

    def _drain(self, *, offer_core: bool) -> None:
        """Format and write every deferred line, DEFERRED_PER_WRITE at a time under the lock;
        with ``offer_core``, yield the core between two writes (the event loop may be waiting
        for it, as in ``predlog_store.yield_cpu``)."""
        while self._deferred:
            with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
                self._write_deferred(DEFERRED_PER_WRITE)
            if offer_core and self._deferred:
                os.sched_yield()

    def _write_deferred(self, most: int | None = None) -> None:
        """Under the lock: format and write deferred lines, all or at most ``most``."""
        formatter = self.formatter
        assert isinstance(formatter, JsonFormatter)  # takes_deferred accepts no other
        pending = self._deferred
        count = len(pending) if most is None else min(len(pending), most)
        lines = [formatter.format_deferred(pending.popleft()) for _ in range(count)]
        if lines:
            self.stream.write("\n".join(lines) + "\n")

    def close(self) -> None:
        """Flush what is buffered and stop the timer thread."""
        self._stopped.set()
        with contextlib.suppress(OSError, ValueError):  # the stream is gone already
            self.flush()
        super().close()

    def _flush_every_interval(self) -> None:
        while not self._stopped.wait(self._interval_s):
            try:
                self._drain(offer_core=True)
                super().flush()  # takes the handler's lock: never mid-line
            except (OSError, ValueError):  # the stream was closed under us: nothing to do
                return


def log_info(
    logger: logging.Logger, message: str, request_id: str | None, fields: dict[str, Any]
) -> None:
    """``logger.info(message, extra=fields)`` for a line logged once a request (the access
    log), formatted later in a batch when the root handler takes deferred lines (see
    BufferedStreamHandler), else logged as usual. ``request_id`` is the request's, as the
    formatter would read it from the context."""
    handlers = logging.root.handlers
    if (
        len(handlers) == 1
        and isinstance(handler := handlers[0], BufferedStreamHandler)
        and handler.takes_deferred(logger)
    ):
        handler.defer((time.time(), logger.name, message, request_id, fields))
    else:
        logger.info(message, extra=fields)


def flush_logs() -> None:
    """Write out what the root logger's handlers hold (before a process ends without running
    its exit handlers)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def _buffered(stream: Any) -> Any:
    """A text stream writing to ``stream``'s file descriptor through a 64 KiB buffer (the stream
    itself when it has no descriptor, as under pytest's capture)."""
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream
    raw = open(descriptor, "wb", buffering=64 * 1024, closefd=False)  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", write_through=False)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Install the root handler on stderr (JSON, plain text, or ``auto``: text on a terminal,
    JSON elsewhere); call once, from the CLI."""
    handler = BufferedStreamHandler(sys.stderr)
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    # The logging HOWTO's optimizations: no record carries the caller's file and line, thread,
    # or process, and our formats print none of them; finding the caller walks the stack on
    # every call, which on the access log is half the cost of a line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for replaced in root.handlers:
        if isinstance(replaced, BufferedStreamHandler):
            replaced.close()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Python warnings (a library's deprecation notice, say) go through logging too: printed
    # raw they would break one-JSON-object-per-line.
    logging.captureWarnings(True)
