"""The JSON log formatter: one object a line, with context and extra fields."""

from __future__ import annotations

import contextlib
import logging
import os
import pty
import sys
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlserve.logging import (
    BufferedStreamHandler,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    log_info,
    request_id_var,
)


def record(created: float, **extra: object) -> logging.LogRecord:
    """A record as logger.info('request', extra=...) makes it, created at ``created``."""
    entry = logging.LogRecord("mlserve.access", logging.INFO, __file__, 1, "request", None, None)
    entry.created = created
    entry.__dict__.update(extra)
    return entry


@given(created=st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_timestamps_equal_isoformat_in_utc_with_milliseconds(created: float) -> None:
    line = orjson.loads(JsonFormatter().format(record(created)))
    assert line["timestamp"] == datetime.fromtimestamp(created, UTC).isoformat(
        timespec="milliseconds"
    )


def test_one_formatter_formats_successive_seconds_correctly() -> None:  # the cached prefix
    formatter = JsonFormatter()
    for created in (1_700_000_000.999, 1_700_000_000.9999996, 1_700_000_000.5, 1_700_000_061.25):
        line = orjson.loads(formatter.format(record(created)))
        assert line["timestamp"] == datetime.fromtimestamp(created, UTC).isoformat(
            timespec="milliseconds"
        )


def test_extra_fields_and_request_context_are_fields_of_the_line() -> None:
    token = request_id_var.set("req-42")
    try:
        line = orjson.loads(JsonFormatter().format(record(0.0, status=200, _private=1)))
    finally:
        request_id_var.reset(token)
    assert line["message"] == "request"
    assert line["level"] == "INFO"
    assert line["status"] == 200
    assert line["request_id"] == "req-42"
    assert "_private" not in line
    assert "lineno" not in line


def test_python_warnings_become_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """A library's warning printed raw would break one-JSON-object-per-line on stderr."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("an old parameter", DeprecationWarning, stacklevel=1)
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1
    entry = orjson.loads(lines[0])
    assert entry["logger"] == "py.warnings"
    assert entry["level"] == "WARNING"
    assert "DeprecationWarning: an old parameter" in entry["message"]


def test_new_request_ids_are_unique_hex_and_ordered_by_time() -> None:
    import time

    from mlserve.logging import new_request_id

    before = time.time_ns() // 1_000_000
    ids = [new_request_id() for _ in range(50_000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids[:100])
    stamps = [int(i[:12], 16) for i in ids]
    assert before <= stamps[0] <= stamps[-1] <= after
    assert stamps == sorted(stamps)  # the prediction log's request-id index appends
    time.sleep(0.002)
    assert new_request_id() > ids[-1]  # a later millisecond sorts after, as text too


def test_buffered_lines_all_arrive_warnings_at_once_the_rest_within_the_interval(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log"
    with path.open("w") as stream:
        handler = BufferedStreamHandler(stream, interval_s=0.05)
        handler.setFormatter(JsonFormatter())
        logger = logging.getLogger("test.buffered")
        logger.propagate, logger.level = False, logging.INFO
        logger.addHandler(handler)
        try:
            for i in range(500):
                logger.info("request", extra={"i": i})
            logger.warning("slow")
            lines = path.read_text().splitlines()
            assert orjson.loads(lines[-1])["message"] == "slow"  # a warning flushes everything
            logger.info("later")
            deadline = time.monotonic() + 10  # bounded: the timer flushes within its interval
            while "later" not in path.read_text() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert "later" in path.read_text()  # the timer thread flushed it
            logger.info("last")
        finally:
            logger.removeHandler(handler)
            handler.close()  # flushes what is left
    records = [orjson.loads(line) for line in path.read_text().splitlines()]
    assert [r.get("i") for r in records[:500]] == list(range(500))
    assert [r["message"] for r in records[500:]] == ["slow", "later", "last"]


@pytest.mark.parametrize("on_a_terminal", [True, False])
def test_auto_format_is_text_on_a_terminal_and_json_elsewhere(
    on_a_terminal: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if on_a_terminal:
        _leader, follower = pty.openpty()
        stream = os.fdopen(follower, "w")
    else:
        stream = (tmp_path / "stderr.log").open("w")
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("INFO", "auto")
        (handler,) = root.handlers
        is_json = isinstance(handler.formatter, JsonFormatter)
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = handlers
        root.setLevel(level)
        stream.close()
    assert is_json is not on_a_terminal


def test_text_lines_carry_the_same_fields_as_json_lines() -> None:
    token = request_id_var.set("req-1")
    try:
        line = TextFormatter().format(record(1_700_000_000.25, model="churn", status=200))
    finally:
        request_id_var.reset(token)
    head, fields = line.split("  ", 1)
    assert head.endswith(" INFO mlserve.access: request")
    assert fields == "request_id=req-1 model=churn status=200"


@contextlib.contextmanager
def json_root_handler(
    tmp_path: Path, interval_s: float = 0.05
) -> Iterator[tuple[BufferedStreamHandler, Path]]:
    """A BufferedStreamHandler with the JSON formatter as the root's only handler, as the CLI
    installs it, writing to a file. Entered in the test itself: pytest adds handlers of its
    own to the root logger around each test phase."""
    path = tmp_path / "log"
    stream = path.open("w")
    handler = BufferedStreamHandler(stream, interval_s=interval_s)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield handler, path
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        handler.close()
        stream.close()


def test_deferred_lines_equal_logged_lines_and_keep_their_order(tmp_path: Path) -> None:
    with json_root_handler(tmp_path, interval_s=3600) as (handler, path):
        check_deferred_lines(handler, path)


def check_deferred_lines(handler: BufferedStreamHandler, path: Path) -> None:
    logger = logging.getLogger("test.deferred")
    assert handler.takes_deferred(logger)
    fields = {"status": 200, "model": "churn", "version": None}
    token = request_id_var.set("req-1")
    try:
        logger.info("request", extra=fields)  # the line log_info stands for
        for i in range(300):
            log_info(logger, "request", "req-1", {**fields, "i": i})
        assert handler.deferred_lines == 300  # not formatted yet
        logger.warning("slow")  # written after every deferred line before it, and flushed
    finally:
        request_id_var.reset(token)
    lines = [orjson.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 302
    logged, deferred = lines[0], lines[1:301]
    assert [d.pop("i") for d in deferred] == list(range(300))
    for entry in (logged, *deferred):
        entry.pop("timestamp")
    assert all(d == logged for d in deferred)
    assert logged == {
        "level": "INFO",
        "logger": "test.deferred",
        "message": "request",
        "request_id": "req-1",
        "status": 200,
        "model": "churn",
        "version": None,
    }
    assert lines[-1]["message"] == "slow"
    assert handler.deferred_lines == 0


def test_the_timer_thread_writes_deferred_lines(tmp_path: Path) -> None:
    with json_root_handler(tmp_path) as (_, path):
        log_info(logging.getLogger("test.timer"), "request", "req-2", {"status": 201})
        deadline = time.monotonic() + 10  # bounded: the timer formats and flushes it in 0.05 s
        while "req-2" not in path.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        (line,) = path.read_text().splitlines()
    assert orjson.loads(line)["request_id"] == "req-2"


def test_deferred_lines_carry_the_time_of_the_call_not_of_the_write(tmp_path: Path) -> None:
    with json_root_handler(tmp_path, interval_s=3600) as (handler, path):
        logger = logging.getLogger("test.deferred.time")
        called = time.time()
        log_info(logger, "request", None, {})
        assert handler.deferred_lines == 1  # taken to format later
        time.sleep(0.3)  # formatted later (the timer thread), stamped with the call's time
        handler.flush()
        (line,) = [orjson.loads(x) for x in path.read_text().splitlines()]
    stamp = datetime.fromisoformat(line["timestamp"]).timestamp()
    assert abs(stamp - called) < 0.01  # milliseconds in the line; written 0.3 s later
    assert "request_id" not in line  # none given, none written


@pytest.mark.parametrize(
    "change",
    ["handler filter", "handler level", "text format", "own handler", "no propagation", "level"],
)
def test_lines_are_logged_normally_unless_the_deferred_line_would_be_the_same(
    change: str, tmp_path: Path
) -> None:
    with json_root_handler(tmp_path) as (handler, path):
        text, seen = log_after(change, handler, path)
    if change in ("own handler", "no propagation"):
        (record,) = seen
        assert record.status == 200  # type: ignore[attr-defined]
    if change == "own handler":
        assert "secret request" in text  # and still propagated to the root handler
    elif change == "text format":
        assert "INFO test.normal.text_format: secret request  status=200" in text
    else:
        assert "secret request" not in text


def log_after(
    change: str, handler: BufferedStreamHandler, path: Path
) -> tuple[str, list[logging.LogRecord]]:
    """log_info once after ``change``; what the file then holds, and what a handler of the
    logger's own saw."""
    logger = logging.getLogger(f"test.normal.{change.replace(' ', '_')}")
    seen: list[logging.LogRecord] = []

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    if change == "handler filter":
        handler.addFilter(lambda r: not r.getMessage().startswith("secret"))
    elif change == "handler level":
        handler.setLevel(logging.WARNING)
    elif change == "text format":
        handler.setFormatter(TextFormatter())
    elif change == "own handler":
        logger.addHandler(Seen())
    elif change == "no propagation":
        logger.propagate = False
        logger.addHandler(Seen())
    elif change == "level":
        logger.setLevel(logging.WARNING)
    assert not handler.takes_deferred(logger)
    log_info(logger, "secret request", None, {"status": 200})
    assert handler.deferred_lines == 0
    handler.flush()
    return path.read_text(), seen
