"""Whole jobs in this process: resume after an interruption, refusals, rejects, metrics."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from batch_data import input_frame, register_classifier
from prometheus_client import CollectorRegistry

from mlserve.batch import JobSpec, PinnedModel, Progress, pin_model, run
from mlserve.batch.checkpoint import JobState
from mlserve.batch.jobs import chunk_rows_for
from mlserve.errors import ConfigError, Conflict, DatasetError
from mlserve.monitoring.batch_metrics import BatchMetrics
from mlserve.registry import RegistryStore


class Interrupted(Exception):
    """Raised from the progress callback to stop a job between two chunks."""


def stop_after(chunks: int) -> Callable[[Progress], None]:
    """A progress callback that interrupts the job once ``chunks`` chunks are done this run."""
    seen = []

    def callback(progress: Progress) -> None:
        seen.append(progress)
        if len(seen) >= chunks:
            raise Interrupted

    return callback


@pytest.fixture
def csv_input(tmp_path: Path) -> Path:
    """500 clean rows as CSV."""
    path = tmp_path / "in.csv"
    input_frame(500).to_csv(path, index=False)
    return path


def spec_for(source: Path, output: Path, **changes: object) -> JobSpec:
    """A one-worker job in chunks of 60 rows, keyed by ``id``, with probabilities."""
    spec = JobSpec(str(source), output, chunk_rows=60, workers=1, id_column="id", proba=True)
    return replace(spec, **changes)


def test_an_interrupted_job_resumes_and_writes_every_row_once(
    tmp_path: Path, csv_input: Path, churn_model: PinnedModel
) -> None:
    clean = run(spec_for(csv_input, tmp_path / "clean.parquet"), churn_model)
    output = tmp_path / "out.parquet"
    with pytest.raises(Interrupted):
        run(spec_for(csv_input, output), churn_model, progress=stop_after(3))
    assert not output.exists()
    assert len(JobState.for_output(output).done_chunks()) == 3
    summary = run(spec_for(csv_input, output), churn_model)
    assert summary.chunks_resumed == 3
    assert (summary.rows_read, summary.rows_scored, summary.chunks) == (500, 500, clean.chunks)
    assert pd.read_parquet(output).equals(pd.read_parquet(tmp_path / "clean.parquet"))
    assert pd.read_parquet(output)["id"].tolist() == list(range(1000, 1500))  # CSV ints stay ints
    assert not JobState.for_output(output).root.exists()


def test_the_python_api_takes_paths_and_strings_alike(
    tmp_path: Path, csv_input: Path, churn_model: PinnedModel
) -> None:
    as_strings = run(spec_for(csv_input, tmp_path / "a.parquet"), churn_model)
    as_paths = run(
        replace(
            spec_for(csv_input, tmp_path / "unused.parquet"),
            input=csv_input,
            output=str(tmp_path / "b.parquet"),
            rejects_path=str(tmp_path / "b-rejects.jsonl"),
        ),
        churn_model,
    )
    assert as_paths.rows_scored == as_strings.rows_scored == 500
    assert as_paths.rejects_file == str(tmp_path / "b-rejects.jsonl")
    assert pd.read_parquet(tmp_path / "b.parquet").equals(pd.read_parquet(tmp_path / "a.parquet"))


def test_a_chunk_whose_done_marker_was_left_empty_is_redone(
    tmp_path: Path, csv_input: Path, churn_model: PinnedModel
) -> None:
    run(spec_for(csv_input, tmp_path / "clean.parquet"), churn_model)
    output = tmp_path / "out.parquet"
    with pytest.raises(Interrupted):
        run(spec_for(csv_input, output), churn_model, progress=stop_after(3))
    JobState.for_output(output).marker_path(1).write_bytes(b"")  # markers are not fsynced
    summary = run(spec_for(csv_input, output), churn_model)
    assert summary.chunks_resumed == 2
    assert pd.read_parquet(output).equals(pd.read_parquet(tmp_path / "clean.parquet"))


def test_default_chunks_hold_about_8_mib_of_input_values() -> None:
    assert chunk_rows_for(20) == 52_428
    assert (chunk_rows_for(1), chunk_rows_for(50_000)) == (100_000, 1_000)


def test_a_changed_input_file_is_refused_on_resume(
    tmp_path: Path, csv_input: Path, churn_model: PinnedModel
) -> None:
    output = tmp_path / "out.parquet"
    with pytest.raises(Interrupted):
        run(spec_for(csv_input, output), churn_model, progress=stop_after(1))
    with csv_input.open("a") as handle:
        handle.write("9999,0.1,0.2,0.3,0.4,pro,north\n")
    with pytest.raises(Conflict, match=r"in\.csv changed since the job started .*refusing"):
        run(spec_for(csv_input, output), churn_model)


def test_changed_options_or_another_model_are_refused_on_resume(
    tmp_path: Path, csv_input: Path, churn_store: RegistryStore
) -> None:
    output = tmp_path / "out.parquet"
    first = pin_model(churn_store, "churn:1", output)
    with pytest.raises(Interrupted):
        run(spec_for(csv_input, output), first, progress=stop_after(1))
    with pytest.raises(Conflict, match="chunk-rows 60 then, 50 now"):
        run(spec_for(csv_input, output, chunk_rows=50), first)
    register_classifier(churn_store, tmp_path / "trained", seed=5)
    second = pin_model(churn_store, "churn:2", tmp_path / "elsewhere.parquet")
    with pytest.raises(Conflict, match="started with model churn:1"):
        run(spec_for(csv_input, output), second)
    with pytest.raises(Conflict, match="scores with churn:1, not churn:2"):
        pin_model(churn_store, "churn:2", output)


def test_an_alias_moved_during_the_job_does_not_mix_versions(
    tmp_path: Path, csv_input: Path, churn_store: RegistryStore
) -> None:
    churn_store.set_alias("churn", "production", 1)
    output = tmp_path / "out.parquet"
    pinned = pin_model(churn_store, "churn@production", output)
    with pytest.raises(Interrupted):
        run(spec_for(csv_input, output), pinned, progress=stop_after(2))
    register_classifier(churn_store, tmp_path / "trained", seed=5)
    churn_store.set_alias("churn", "production", 2)
    resumed = pin_model(churn_store, "churn@production", output)
    assert (resumed.version, resumed.is_resumed) == (1, True)
    run(spec_for(csv_input, output), resumed)
    assert set(pd.read_parquet(output)["model_version"]) == {"churn:1"}
    assert pin_model(churn_store, "churn@production", output).version == 2  # next job: new alias


def test_rejects_go_to_a_file_and_max_reject_rate_withholds_the_output(
    tmp_path: Path, churn_model: PinnedModel
) -> None:
    frame = input_frame(200).astype({"f1": object})
    frame.loc[frame.index % 10 == 3, "f1"] = "n/a?"
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)
    output = tmp_path / "out.parquet"
    with pytest.raises(DatasetError, match=r"20 of 200 records rejected \(10\.00%\)"):
        run(spec_for(source, output, max_reject_rate=0.05), churn_model)
    assert not output.exists()
    rejects = [
        json.loads(line) for line in (tmp_path / "out.rejects.jsonl").read_text().splitlines()
    ]
    assert [r["id"] for r in rejects] == list(range(1003, 1200, 10))
    assert rejects[0] == {
        "row": 3,
        "file": str(source),
        "line": 5,
        "reason": "feature 'f1' is not a number: 'n/a?'",
        "id": 1003,
    }
    summary = run(spec_for(source, output, max_reject_rate=0.1), churn_model)
    assert summary.chunks_resumed == summary.chunks  # nothing scored twice
    assert (summary.rows_scored, summary.rows_rejected) == (180, 20)
    assert len(pd.read_parquet(output)) == 180


def test_metrics_hold_the_summary_numbers_across_a_resume(
    tmp_path: Path, csv_input: Path, churn_model: PinnedModel
) -> None:
    output = tmp_path / "out.parquet"
    with pytest.raises(Interrupted):
        run(spec_for(csv_input, output), churn_model, progress=stop_after(2))
    registry = CollectorRegistry()
    summary = run(spec_for(csv_input, output), churn_model, metrics=BatchMetrics.create(registry))
    labels = {"model": "churn", "version": "1"}

    def value(name: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("mlserve_batch_rows_read_total") == summary.rows_read == 500
    assert value("mlserve_batch_rows_scored_total") == summary.rows_scored
    assert value("mlserve_batch_rows_rejected_total") == summary.rows_rejected == 0
    assert value("mlserve_batch_chunks_total") == summary.chunks
    assert (value("mlserve_batch_last_success_timestamp_seconds") or 0) > 0


def test_outputs_can_be_csv_files_or_folders_of_parts(
    tmp_path: Path, csv_input: Path, churn_model: PinnedModel
) -> None:
    run(spec_for(csv_input, tmp_path / "one.csv"), churn_model)
    run(spec_for(csv_input, tmp_path / "parts", output_format="csv"), churn_model)
    run(spec_for(csv_input, tmp_path / "pq"), churn_model)
    one = pd.read_csv(tmp_path / "one.csv")
    parts = sorted((tmp_path / "parts").iterdir())
    assert [p.name for p in parts[:2]] == ["part-00000.csv", "part-00001.csv"]
    assert len(parts) == 9
    assert pd.concat(pd.read_csv(p) for p in parts).reset_index(drop=True).equals(one)
    assert pd.read_parquet(tmp_path / "pq")["id"].tolist() == one["id"].tolist()


def test_a_second_process_on_the_same_job_is_refused(
    tmp_path: Path, csv_input: Path, churn_model: PinnedModel
) -> None:
    output = tmp_path / "out.parquet"
    with (
        JobState.for_output(output).locked(),
        pytest.raises(Conflict, match="another mlserve batch job"),
    ):
        run(spec_for(csv_input, output), churn_model)


def test_the_dask_engine_without_dask_says_how_to_install_it(
    tmp_path: Path, csv_input: Path, churn_model: PinnedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # what an install without the extra sees
    with pytest.raises(ConfigError, match=r"pip install 'mlserve\[dask\]'"):
        run(spec_for(csv_input, tmp_path / "out.parquet", engine="dask"), churn_model)
