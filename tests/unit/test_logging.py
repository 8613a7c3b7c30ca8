"""The JSON log formatter: one object a line, with context and extra fields."""

from __future__ import annotations

import logging
import os
import pty
import sys
import time
import warnings
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
