"""RegistryHealth: the backoff of registry reads while the database is away, the gauge, and one
log line per failed read (a traceback only for what is not the database failing)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from mlserve.errors import RegistryUnavailable
from mlserve.monitoring.metrics import ServingMetrics
from mlserve.serving.registry_health import RETRY_MOST_S, RegistryHealth

DATABASE = "postgresql+psycopg://mlserve:***@db:5432/mlserve"
DOWN = RegistryUnavailable(f"the registry database {DATABASE} cannot be reached: refused")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def health(
    interval_s: float, clock: Clock | None = None
) -> tuple[RegistryHealth, CollectorRegistry]:
    registry = CollectorRegistry()
    gauge = ServingMetrics.create(registry).registry_up
    return RegistryHealth(DATABASE, gauge, interval_s, clock=clock or Clock()), registry


def up(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("mlserve_registry_up")


def test_reads_back_off_from_the_interval_doubling_to_a_cap_and_reset_once_one_works() -> None:
    registry_health, _ = health(2.0)
    assert registry_health.next_read_in_s() == 2.0
    waits = []
    for _ in range(8):
        registry_health.failed(DOWN)
        waits.append(registry_health.next_read_in_s())
    assert waits == [2.0, 4.0, 8.0, 16.0, RETRY_MOST_S, RETRY_MOST_S, RETRY_MOST_S, RETRY_MOST_S]
    registry_health.succeeded()
    assert registry_health.next_read_in_s() == 2.0


def test_a_reload_interval_longer_than_the_cap_is_never_shortened() -> None:
    registry_health, _ = health(120.0)
    for _ in range(3):
        registry_health.failed(DOWN)
        assert registry_health.next_read_in_s() == 120.0


def test_the_wait_stays_capped_after_any_number_of_failures() -> None:
    registry_health, _ = health(0.5)
    for _ in range(5000):  # a long outage must not overflow the power of two
        registry_health.failed(DOWN)
    assert registry_health.next_read_in_s() == RETRY_MOST_S


def test_the_gauge_follows_the_last_read() -> None:
    registry_health, registry = health(2.0)
    assert up(registry) == 1  # up until a read fails
    registry_health.succeeded()
    assert up(registry) == 1
    registry_health.failed(DOWN)
    assert up(registry) == 0
    assert not registry_health.is_up
    registry_health.succeeded()
    assert up(registry) == 1
    assert registry_health.is_up


def test_one_line_per_failed_read_then_one_when_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mlserve.serving.registry_health")
    clock = Clock()
    registry_health, _ = health(1.0, clock)
    registry_health.succeeded()  # a working read while it was up says nothing
    for _ in range(3):
        registry_health.failed(DOWN)
        clock.now += 1.5
    registry_health.succeeded()
    registry_health.succeeded()
    lines = [(r.levelname, r.getMessage(), r.__dict__) for r in caplog.records]
    assert [(level, message) for level, message, _ in lines] == [
        ("WARNING", "registry unreachable; serving what is loaded"),
    ] * 3 + [("INFO", "registry reachable again")]
    for number, (_, _, fields) in enumerate(lines[:3], start=1):
        assert fields["database"] == DATABASE
        assert fields["error"] == str(DOWN)
        assert fields["failed_reads"] == number
        assert fields["retry_in_s"] == min(2.0 ** (number - 1), RETRY_MOST_S)
    assert all(r.exc_info is None for r in caplog.records)  # the database failing is no bug
    assert lines[3][2]["failed_reads"] == 3
    assert lines[3][2]["down_s"] == 4.5


def test_an_error_that_is_not_the_database_failing_keeps_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry_health, registry = health(1.0)
    try:
        raise KeyError("a bug")
    except KeyError as bug:
        registry_health.failed(bug)
    [record] = caplog.records
    assert record.levelname == "ERROR"
    assert record.exc_info is not None
    assert up(registry) == 0


def test_only_sighup_reads_say_no_retry_time(caplog: pytest.LogCaptureFixture) -> None:
    registry_health, _ = health(0.0)
    registry_health.failed(DOWN)
    assert caplog.records[0].__dict__["retry_in_s"] is None
    assert registry_health.next_read_in_s() == 0.0
