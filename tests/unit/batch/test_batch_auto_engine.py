"""When the default local engine adds worker processes: only when the first chunk says so."""

from __future__ import annotations

import pytest

from mlserve.batch.engines import ChunkCost, helpers_pay_off, threads_pay_off

SLOW = ChunkCost(records=10_000, read_s=0.01, score_s=0.5, ship_s=0.01)
"""A chunk of a model that takes the time: a forest, say."""
FAST = ChunkCost(records=10_000, read_s=0.01, score_s=0.01, ship_s=0.005)
"""A chunk of a model quicker than reading and shipping its rows: a linear model."""


def test_helpers_start_for_a_slow_model_with_enough_rows_left() -> None:
    assert helpers_pay_off(SLOW, records_left=1_000_000, helpers=1, start_s=1.0)
    assert helpers_pay_off(SLOW, records_left=None, helpers=1, start_s=1.0)


def test_no_helpers_when_the_rest_of_the_job_is_shorter_than_their_start() -> None:
    assert not helpers_pay_off(SLOW, records_left=20_000, helpers=1, start_s=1.0)


def test_no_helpers_for_a_model_faster_than_sending_it_rows() -> None:
    assert not helpers_pay_off(FAST, records_left=100_000, helpers=1, start_s=1.0)


def test_no_helpers_when_they_would_save_only_a_little() -> None:
    # Reading dominates: 0.055 s a chunk shared against 0.07 s alone (21 % saved). Over 10M
    # records that would repay the start many times, but one timed chunk is too weak a sign.
    read_bound = ChunkCost(records=10_000, read_s=0.05, score_s=0.02, ship_s=0.005)
    assert not helpers_pay_off(read_bound, records_left=10_000_000, helpers=1, start_s=0.1)
    assert not helpers_pay_off(read_bound, records_left=None, helpers=1, start_s=0.1)
    score_bound = ChunkCost(records=10_000, read_s=0.005, score_s=0.04, ship_s=0.0)
    assert helpers_pay_off(score_bound, records_left=10_000_000, helpers=1, start_s=0.1)


def test_no_helpers_on_one_core() -> None:
    assert not helpers_pay_off(SLOW, records_left=1_000_000, helpers=0, start_s=1.0)


def test_threads_score_a_slow_model_whatever_is_left() -> None:
    # Nothing to start or ship: even a short job gains from a second thread.
    assert threads_pay_off(SLOW, threads=2)
    assert not threads_pay_off(SLOW, threads=1)


def test_no_threads_when_reading_takes_the_time() -> None:
    read_bound = ChunkCost(records=10_000, read_s=0.03, score_s=0.01)
    assert not threads_pay_off(read_bound, threads=2)  # 0.035 s against 0.04 s alone
    assert not threads_pay_off(read_bound, threads=16)  # 23 % saved: under the bar


def test_no_helpers_for_a_model_that_scores_on_several_cores_by_itself() -> None:
    # HistGradientBoosting predicts through OpenMP: 0.9 s of CPU in 0.5 s of scoring.
    own_threads = ChunkCost(records=10_000, read_s=0.01, score_s=0.5, ship_s=0.01, score_cpu_s=0.9)
    assert own_threads.cores_used == pytest.approx(1.8)
    assert not helpers_pay_off(own_threads, records_left=1_000_000, helpers=1, start_s=1.0)
    one_core = ChunkCost(records=10_000, read_s=0.01, score_s=0.5, ship_s=0.01, score_cpu_s=0.52)
    assert helpers_pay_off(one_core, records_left=1_000_000, helpers=1, start_s=1.0)
