"""`mlserve batch` end to end: summary, exit codes, metrics, progress, refusals, Dask."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from batch_harness import FEATURES, BatchProject, input_frame, summary_of

from mlserve.runtimes import Runtime


@pytest.fixture
def source(project: BatchProject) -> Path:
    """2,000 rows as CSV; every 50th has f1 = 'oops'."""
    path = project.root / "in.csv"
    input_frame(2000, bad_every=50).to_csv(path, index=False)
    return path


def test_a_job_with_rejects_exits_10_with_a_summary_metrics_and_progress(
    project: BatchProject, source: Path, churn_v1: Runtime
) -> None:
    output, metrics = project.root / "scores.parquet", project.root / "batch.prom"
    result = project.run(
        *("batch", "churn", str(source), str(output), "--id-column", "id"),
        *("--chunk-rows", "500", "--workers", "1", "--metrics-file", str(metrics)),
    )
    assert result.returncode == 10, result.stderr
    summary = summary_of(result)
    assert summary["status"] == "complete"
    assert (summary["model"], summary["version"]) == ("churn", 1)
    assert (summary["rows_read"], summary["rows_scored"], summary["rows_rejected"]) == (
        2000,
        1960,
        40,
    )
    assert summary["rejects_file"] == str(project.root / "scores.rejects.jsonl")
    assert "batch: 2,000 rows of ~2,000 (100%)" in result.stderr  # plain lines off a terminal
    assert "40 record(s) rejected" in result.stderr
    text = metrics.read_text()
    assert 'mlserve_batch_rows_rejected_total{model="churn",version="1"} 40.0' in text
    assert 'mlserve_batch_rows_scored_total{model="churn",version="1"} 1960.0' in text
    rows = pd.read_parquet(output)
    good = input_frame(2000, bad_every=50)
    good = good[good["f1"].astype(str) != "oops"]
    assert rows["id"].dtype == "int64"
    assert rows["id"].tolist() == good["id"].tolist()
    assert rows["prediction"].tolist() == list(churn_v1.predict(good[FEATURES].astype(float)))
    first = json.loads((project.root / "scores.rejects.jsonl").read_text().splitlines()[0])
    assert first == {
        "row": 49,
        "file": str(source),
        "line": 51,
        "reason": "feature 'f1' is not a number: 'oops'",
        "id": 49,
    }


def test_too_many_rejects_fail_the_job_and_a_changed_input_is_refused(
    project: BatchProject, source: Path
) -> None:
    output = project.root / "scores.parquet"
    args = ("batch", "churn", str(source), str(output), "--chunk-rows", "500", "--workers", "1")
    result = project.run(*args, "--max-reject-rate", "0.01")
    assert result.returncode == 4, result.stderr
    assert "40 of 2000 records rejected (2.00%)" in " ".join(result.stderr.split())
    assert not output.exists()
    with source.open("a") as handle:
        handle.write("5000,0.1,0.2,0.3,0.4\n")
    result = project.run(*args)
    assert result.returncode == 7, result.stderr
    message = " ".join(result.stderr.split())
    assert "in.csv changed since the job started" in message
    assert "scores.parquet.mlserve-job to start over" in message


@pytest.mark.slow
def test_the_dask_engine_on_a_local_cluster_loads_the_model_once_per_worker(
    project: BatchProject, churn_v1: Runtime
) -> None:
    frame = input_frame(1200)
    source = project.root / "in.parquet"
    frame.to_parquet(source, row_group_size=300)
    output = project.root / "scores"  # a folder of parts
    result = project.run(
        *("batch", "churn", str(source), str(output), "--id-column", "id", "--proba"),
        *("--engine", "dask", "--workers", "2", "--chunk-rows", "100", "--no-progress"),
    )
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert (summary["engine"], summary["workers"], summary["chunks"]) == ("dask", 2, 12)
    assert 1 <= int(str(summary["model_loads"])) <= 2  # per worker process, not per chunk
    assert len(list(output.glob("part-*.parquet"))) == 12
    rows = pd.read_parquet(output)
    assert rows["id"].tolist() == frame["id"].tolist()
    assert rows["prediction"].tolist() == list(churn_v1.predict(frame[FEATURES]))
