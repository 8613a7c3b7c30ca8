"""SIGKILL `mlserve batch` at random moments, many times; the resumed job loses and repeats nothing."""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from batch_harness import COMMAND, FEATURES, BatchProject, input_frame

from mlserve.batch.checkpoint import JobState
from mlserve.runtimes import Runtime

KILLS = 8
ROWS = 12_000
CHUNK_ROWS = 300
BAD_EVERY = 97


def done_chunks(output: Path) -> int:
    """Chunks the job has checkpointed so far."""
    folder = JobState.for_output(output).root / "done"
    return len(list(folder.glob("*.json"))) if folder.is_dir() else 0


def session_processes(session: int) -> list[psutil.Process]:
    """Live processes of a session: the job, its forkserver and its workers."""
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return found


def kill_at_a_random_moment(
    project: BatchProject, args: list[str], output: Path, rng: random.Random, *, whole_tree: bool
) -> bool:
    """Start the job and SIGKILL it mid-way; False when it finished before the kill."""
    before = done_chunks(output)
    process = project.popen(*args)
    if rng.random() < 0.3:  # anywhere: start-up, reading, scoring, assembling the output
        deadline = time.monotonic() + rng.uniform(0.2, 3.0)
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.005)
    else:  # after a few more checkpoints, plus a few milliseconds to land inside a write
        target = before + rng.randint(1, 5)
        deadline = time.monotonic() + 60
        while done_chunks(output) < target and process.poll() is None:
            assert time.monotonic() < deadline, "the job made no progress"
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.02))
    if process.poll() is not None:
        process.communicate()
        return False
    session = process.pid
    if whole_tree:
        os.killpg(session, signal.SIGKILL)
    else:  # only the coordinator: orphaned workers may still finish their chunk
        os.kill(session, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while session_processes(session) and time.monotonic() < deadline:
            time.sleep(0.05)
        if session_processes(session):
            os.killpg(session, signal.SIGKILL)
    process.communicate()
    return True


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_or_repeats_a_row(
    project: BatchProject, churn_v1: Runtime
) -> None:
    seed = int(os.environ.get("BATCH_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    frame = input_frame(ROWS, bad_every=BAD_EVERY)
    source = project.root / "in.csv"
    frame.to_csv(source, index=False)
    output = project.root / "scores.parquet"
    base = [
        *("batch", "churn", str(source), str(output)),
        *("--chunk-rows", str(CHUNK_ROWS), "--id-column", "id", "--proba", "--no-progress"),
    ]
    kills = attempts = 0
    while kills < KILLS and attempts < 3 * KILLS:
        attempts += 1
        workers = "2" if attempts % 4 == 0 else "1"  # every fourth run uses the process pool
        whole_tree = attempts != 8  # once, kill only the coordinator and orphan its workers
        args = [*base, "--workers", workers]
        if kill_at_a_random_moment(project, args, output, rng, whole_tree=whole_tree):
            kills += 1
        if not JobState.for_output(output).root.exists() and output.exists():
            output.unlink()  # finished before the kill: start over to keep killing
    assert kills == KILLS, f"seed {seed}: only {kills} kills landed"

    # 0 when the last kill landed after the job had finished and cleaned up its checkpoints.
    checkpointed = done_chunks(output)
    result = project.run(*base, "--workers", "1")
    assert result.returncode == 10, f"seed {seed}: {result.stderr}"
    summary = json.loads(result.stdout)
    bad = frame["f1"].astype(str) == "oops"
    good = frame[~bad]
    assert summary["rows_read"] == ROWS
    assert summary["rows_rejected"] == int(bad.sum())
    assert (summary["chunks_resumed"] > 0) == (checkpointed > 0), f"seed {seed}"

    out = pd.read_parquet(output)
    assert out["id"].tolist() == good["id"].tolist(), f"seed {seed}"
    expected = churn_v1.predict(good[FEATURES].astype(float))
    assert out["prediction"].tolist() == list(expected), f"seed {seed}"
    assert set(out["model_version"]) == {"churn:1"}
    lines = (project.root / "scores.rejects.jsonl").read_text().splitlines()
    rejects = [json.loads(line) for line in lines]
    assert [r["id"] for r in rejects] == frame.loc[bad, "id"].tolist(), f"seed {seed}"
    assert not JobState.for_output(output).root.exists()


def test_ctrl_c_says_how_far_the_job_got_and_how_to_resume(project: BatchProject) -> None:
    # Ten times the rows of the other tests: at ~40,000 rows/s a loaded machine could let the
    # whole job finish between two polls below, before Ctrl-C is sent.
    frame = input_frame(10 * ROWS)
    source = project.root / "in.csv"
    frame.to_csv(source, index=False)
    output = project.root / "scores.parquet"
    args = [
        *("batch", "churn", str(source), str(output)),
        *("--chunk-rows", str(CHUNK_ROWS), "--id-column", "id", "--workers", "1"),
    ]
    process = project.popen(*args)
    deadline = time.monotonic() + 60
    while done_chunks(output) < 2 and process.poll() is None:
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.005)
    assert process.poll() is None, "the job ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted after "), stderr
    resume = last.split("Run the same command to resume: ", 1)[1]
    assert resume == shlex.join(["mlserve", *project.command(*args)[len(COMMAND) :]])

    resumed = project.run(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["chunks_resumed"] >= 2
    assert pd.read_parquet(output)["id"].tolist() == frame["id"].tolist()
