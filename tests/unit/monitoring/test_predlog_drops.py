"""DropReport: dropped prediction-log records are said in the log, never once per record."""

from __future__ import annotations

import logging

import pytest

from mlserve.monitoring.predlog_drops import REPORT_INTERVAL_S, DropReport


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The captured log (its records are read when said() is called)."""
    caplog.set_level(logging.INFO, logger="mlserve.monitoring.predlog_drops")
    return caplog


def said(log: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, object]]]:
    keys = ("records", "queue_rows", "dropped", "since_s")
    return [
        (r.getMessage(), {k: r.__dict__[k] for k in keys if k in r.__dict__}) for r in log.records
    ]


def test_start_every_interval_and_end_each_said_once(lines: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    report = DropReport(20, clock=clock)
    report.took_one()  # nothing dropped: nothing to say
    for _ in range(100):  # a burst of drops: one line
        report.dropped(2)
        clock.now += 0.01
    clock.now = REPORT_INTERVAL_S
    report.dropped(3)  # an interval after the first line: the count since then
    assert report.is_dropping
    clock.now += REPORT_INTERVAL_S
    report.took_one()
    report.took_one()
    assert not report.is_dropping
    assert said(lines) == [
        ("prediction log full; dropping records", {"records": 2, "queue_rows": 20}),
        ("prediction log records dropped", {"records": 201, "since_s": REPORT_INTERVAL_S}),
        ("prediction log takes records again", {"dropped": 203}),
    ]
    assert all(r.levelname == "WARNING" for r in lines.records)


def test_a_queue_full_again_a_moment_later_is_one_episode(lines: pytest.LogCaptureFixture) -> None:
    """Behind a slow database the queue takes a batch's worth, then is full again: the log must
    not start and end an episode per batch."""
    clock = Clock()
    report = DropReport(20, clock=clock)
    for _ in range(50):
        report.dropped(1)
        report.took_one()
        clock.now += 0.1  # 5 s in all: within one interval
    assert [m for m, _ in said(lines)] == ["prediction log full; dropping records"]
    clock.now += REPORT_INTERVAL_S
    report.took_one()
    assert said(lines)[-1] == ("prediction log takes records again", {"dropped": 50})
    report.dropped(1)  # a new episode, said at once
    assert said(lines)[-1] == (
        "prediction log full; dropping records",
        {"records": 1, "queue_rows": 20},
    )
