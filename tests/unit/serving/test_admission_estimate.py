"""Admission before work: the row estimate from Content-Length, and held connections."""

from __future__ import annotations

from mlserve.serving.admission import RetryAfterHold, RowEstimate, declared_length


def test_a_cold_version_estimates_one_row() -> None:
    assert RowEstimate().rows_of(40_000) == 1


def test_rows_are_estimated_from_the_body_size_of_earlier_requests() -> None:
    sizes = RowEstimate()
    sizes.record_bytes(40_000)
    sizes.record_rows(100)
    assert sizes.rows_of(40_000) == 100
    assert sizes.rows_of(4_000) == 10
    assert sizes.rows_of(None) == 100  # no Content-Length: the usual request
    assert sizes.rows_of(10) == 1


def test_a_content_length_that_is_not_a_number_is_not_declared() -> None:
    assert declared_length("123") == 123
    assert declared_length(None) is None
    assert declared_length("-5") is None


def test_a_held_connection_waits_out_its_retry_after_once() -> None:
    held = RetryAfterHold(share=lambda: 1.0)
    client = ("127.0.0.1", 5000)
    held.hold(client, 1.0, now=10.0)
    assert held.wait_s(("127.0.0.1", 5001), now=10.2) == 0.0  # another connection
    assert held.wait_s(client, now=10.25) == 0.75
    assert held.wait_s(client, now=10.3) == 0.0  # the hold is used up


def test_holds_last_half_to_all_of_the_retry_after() -> None:
    held = RetryAfterHold()
    for port in range(200):
        held.hold(("127.0.0.1", port), 1.0, now=0.0)
    waits = [held.wait_s(("127.0.0.1", port), now=0.0) for port in range(200)]
    assert all(0.5 <= w <= 1.0 for w in waits)
    assert max(waits) - min(waits) > 0.1  # spread, not one wave


def test_a_request_after_its_retry_after_does_not_wait() -> None:
    held = RetryAfterHold()
    held.hold(("::1", 1), 1.0, now=0.0)
    assert held.wait_s(("::1", 1), now=2.0) == 0.0
    held.hold(None, 1.0, now=0.0)  # no client address (a Unix socket): nothing to hold
    assert held.wait_s(None, now=0.0) == 0.0
