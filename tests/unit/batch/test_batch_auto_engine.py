"""When the default local engine adds worker processes: only when the first chunk says so."""

from __future__ import annotations

from pathlib import Path

from batch_data import input_frame

from mlserve.batch import JobSpec, PinnedModel, run
from mlserve.batch.engines import ChunkCost, helpers_pay_off, spare_cores

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


def test_no_helpers_on_one_core() -> None:
    assert not helpers_pay_off(SLOW, records_left=1_000_000, helpers=0, start_s=1.0)


def test_helpers_go_only_to_cores_that_other_processes_leave_idle() -> None:
    assert spare_cores(2, busy_elsewhere=0.1) == 1
    assert spare_cores(2, busy_elsewhere=0.9) == 0
    assert spare_cores(8, busy_elsewhere=3.2) == 4
    assert spare_cores(1, busy_elsewhere=0.0) == 0


def test_a_small_job_with_default_workers_is_scored_in_this_process(
    tmp_path: Path, churn_model: PinnedModel
) -> None:
    source = tmp_path / "in.parquet"
    input_frame(300).to_parquet(source)
    summary = run(JobSpec(str(source), tmp_path / "out.parquet", chunk_rows=100), churn_model)
    assert (summary.workers, summary.model_loads, summary.chunks) == (1, 1, 3)
