"""Batch benchmark: `mlserve batch` (local engine) against in-memory and pyarrow-only floors.

Builds Parquet files of make_classification(n_features=20) rows, then measures

1. rows/s of a RandomForestClassifier(100 trees, depth 8) job with one worker, one per core,
   and the default (``--workers`` not given), against one in-process ``model.predict`` over
   the same rows already in memory;
2. total time of a LogisticRegression job, against pyarrow alone reading the input and
   writing an output of the same shape (row, prediction, model_version) in batches of the
   job's chunk size;
3. peak RSS of the default LogisticRegression job over 1M and 5M rows, and of the default
   RandomForest job (the coordinator, and all processes together).

Each job is an `mlserve batch` command, so interpreter, import and pool start-up are included,
as a user sees them; "inside run()" is the job without them. Jobs use the default chunk size. Prints a
markdown table and writes it to bench/results/batch.md. Run by ``make bench`` after the serving
benchmark; alone: ``.venv/bin/python bench/batch_bench.py [--skip-5m]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from mlserve.batch.jobs import chunk_rows_for
from mlserve.monitoring import describe_features
from mlserve.registry import NewVersion, RegistryStore
from mlserve.runtimes import dump_sklearn
from mlserve.types import Signature

FEATURES = [f"x{i}" for i in range(20)]
BLOCK_ROWS = 250_000
ROW_GROUP_ROWS = 100_000
CHUNK_ROWS = chunk_rows_for(len(FEATURES))
"""The jobs' default chunk size, which the pyarrow floor streams in too."""

MLSERVE = Path(sys.executable).with_name("mlserve")
SAMPLE_S = 0.02
"""How often the memory of a job's processes is sampled."""


# Each floor runs in a fresh interpreter, as the jobs do, and prints the seconds of its work
# after its imports: a fresh process pays for first-touch memory and pyarrow's first calls,
# which a floor timed inside this warm process would not. pandas is imported up front, as
# mlserve does: pyarrow's first conversion of a numpy array imports it otherwise (0.3 s).
# Both stream the input and write row, prediction and model_version in batches of the job's
# chunk size; they differ in where the prediction comes from.
_FLOOR = """
import sys, time
import {imports}numpy as np, pandas, pyarrow as pa, pyarrow.parquet as pq
model_path, source, output, chunk_rows = sys.argv[1:5]
started = time.perf_counter()
model = {model}
writer, offset = None, 0
for batch in pq.ParquetFile(source).iter_batches(batch_size=int(chunk_rows)):
    out = pa.table({{
        "row": pa.array(np.arange(offset, offset + batch.num_rows)),
        "prediction": pa.array({prediction}),
        "model_version": pa.repeat(pa.scalar("logreg:1"), batch.num_rows),
    }})
    writer = writer or pq.ParquetWriter(output, out.schema)
    writer.write_table(out)
    offset += batch.num_rows
writer.close()
print(time.perf_counter() - started)
"""
PYARROW_FLOOR = _FLOOR.format(
    imports="", model="None", prediction="np.zeros(batch.num_rows, dtype=np.int64)"
)
"""pyarrow alone: the output of the job's shape, with a constant prediction."""
SCRIPT_FLOOR = _FLOOR.format(
    imports="joblib, ",
    model="joblib.load(model_path)",
    prediction="model.predict(batch.to_pandas())",
)
"""The least a hand-written script does for the same job: load the model and predict. No
validation, checkpoints or rejects: what is left of mlserve's end-to-end time over this is their
cost plus mlserve's own imports (the registry, the batch code)."""
REPEATS = 3
"""Runs of each LogisticRegression measurement, interleaved; the tables show medians (on a
shared 2-core VM one run of a sub-second job varies by a factor of two)."""


def run_script(script: str, *args: object) -> tuple[float, float]:
    """Wall seconds of ``script`` in a fresh interpreter, and the seconds it reports."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], check=True, capture_output=True, text=True
    )
    return time.perf_counter() - started, float(done.stdout)


def write_input(path: Path, rows: int) -> None:
    """``rows`` rows of 20 features, generated and written a block at a time."""
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return
    writer = None
    for start in range(0, rows, BLOCK_ROWS):
        count = min(BLOCK_ROWS, rows - start)
        x, _ = make_classification(n_samples=count, n_features=20, random_state=start)
        table = pa.table({name: x[:, i] for i, name in enumerate(FEATURES)})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
    assert writer is not None
    writer.close()


def register(store: RegistryStore, name: str, model: object, folder: Path) -> object:
    """Fit ``model`` on 20,000 rows and register it as ``name``; returns the fitted model."""
    x, y = make_classification(n_samples=20_000, n_features=20, random_state=42)
    frame = pa.table({n: x[:, i] for i, n in enumerate(FEATURES)}).to_pandas()
    model.fit(frame, y)  # type: ignore[attr-defined]
    path = dump_sklearn(model, folder / f"{name}.joblib")
    signature = Signature(
        inputs=describe_features(frame), task="classification", classes=("0", "1")
    )
    store.register_version(name, path, NewVersion(framework="sklearn", signature=signature))
    return model


def run_job(
    home: Path, name: str, source: Path, output: Path, workers: int | None
) -> dict[str, object]:
    """One `mlserve batch` command, as a user runs it; its summary, wall time and peak RSS.

    ``workers=None`` leaves the choice to the job, as without ``--workers``. Memory is sampled
    every SAMPLE_S: the command's own process (the coordinator), and it with its children.
    """
    command = [str(MLSERVE), "batch", name, str(source), str(output), "--no-progress"]
    if workers is not None:
        command += ["--workers", str(workers)]
    started = time.perf_counter()
    job = subprocess.Popen(
        command,
        env={**os.environ, "MLSERVE_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    peak_own = peak_total = 0
    process = psutil.Process(job.pid)
    while job.poll() is None:
        with contextlib.suppress(psutil.Error):
            own = process.memory_info().rss
            total = own
            for child in process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            peak_own, peak_total = max(peak_own, own), max(peak_total, total)
        time.sleep(SAMPLE_S)
    wall_s = time.perf_counter() - started
    assert job.stdout is not None
    summary: dict[str, object] = json.loads(job.stdout.read())
    assert job.returncode == 0, f"mlserve batch exited with {job.returncode}"
    summary.update(
        wall_s=wall_s, peak_rss_kib=peak_own // 1024, peak_total_rss_kib=peak_total // 1024
    )
    return summary


def in_memory_predict(model: object, source: Path) -> tuple[float, int]:
    """Seconds for one ``model.predict`` over every row already in memory, and the row count."""
    frame = pq.read_table(source).to_pandas()
    started = time.perf_counter()
    model.predict(frame)  # type: ignore[attr-defined]
    return time.perf_counter() - started, len(frame)


def main() -> None:
    """Build inputs, run every measurement, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "mlserve-batch-bench"
    )
    parser.add_argument("--skip-5m", action="store_true", help="skip the 5M-row memory run")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).parent / "results" / "batch.md",
        help="where the markdown table goes (it is printed too)",
    )
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    workers = len(os.sched_getaffinity(0))
    one_m, five_m = work / "rows-1m.parquet", work / "rows-5m.parquet"
    write_input(one_m, 1_000_000)
    if not args.skip_5m:
        write_input(five_m, 5_000_000)
    home = work / "registry"
    if home.exists():
        shutil.rmtree(home)
    home.mkdir()
    store = RegistryStore(
        f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"), home / "cache"
    )
    forest = register(
        store, "forest", RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0), work
    )
    register(store, "logreg", LogisticRegression(max_iter=500), work)
    store.close()

    rows: list[tuple[str, str, str]] = []
    forest_s, count = in_memory_predict(forest, one_m)
    forest_jobs = {}
    choices = _worker_choices(workers)
    for n in choices:
        job = forest_jobs[n] = run_job(home, "forest", one_m, work / f"forest-{n}.parquet", n)
        wall_s = float(str(job["wall_s"]))
        rows.append(
            (
                f"RandomForest(100, depth 8), 1M rows, {_workers_label(n, job)}",
                f"{count / wall_s:,.0f} rows/s ({wall_s:.1f} s end to end, "
                f"{job['seconds']} s inside run())",
                f"{count / forest_s:,.0f} rows/s: one in-process predict on rows in memory "
                f"(mlserve at {forest_s / wall_s:.2f}x of it)",
            )
        )
    logreg_table, logreg_jobs = logreg_rows(home, work, one_m, choices)
    rows += logreg_table
    rss = [("LogisticRegression, 1M", logreg_jobs[None])]
    if not args.skip_5m:
        five_m_job = run_job(home, "logreg", five_m, work / "logreg-5m.parquet", None)
        rss.append(("LogisticRegression, 5M", five_m_job))
    rss.append(("RandomForest, 1M", forest_jobs[None]))
    for label, job in rss:
        rows.append(
            (
                f"Peak RSS, {label} rows, {_workers_label(None, job)}",
                f"coordinator {int(str(job['peak_rss_kib'])) / 1024:,.0f} MiB; all processes "
                f"{int(str(job['peak_total_rss_kib'])) / 1024:,.0f} MiB",
                f"{float(str(job['wall_s'])):.1f} s, {job['rows_read']:,} rows",
            )
        )
    lines = [
        f"mlserve batch benchmark ({platform.processor() or platform.machine()}, {workers} "
        f"cores, chunks of {CHUNK_ROWS:,} rows, Parquet row groups of {ROW_GROUP_ROWS:,})",
        "",
        "| measurement | mlserve batch | reference |",
        "| --- | --- | --- |",
        *(f"| {name} | {ours} | {reference} |" for name, ours, reference in rows),
    ]
    text = "\n".join(lines) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print("\n" + text)


def logreg_rows(
    home: Path, work: Path, source: Path, choices: list[int | None]
) -> tuple[list[tuple[str, str, str]], dict[int | None, dict[str, object]]]:
    """The LogisticRegression rows of the table, and each worker choice's job of most memory."""
    rows = []
    floors, scripts = [], []
    logreg_runs: dict[int | None, list[dict[str, object]]] = {n: [] for n in choices}
    for _ in range(REPEATS):  # interleaved, so a slow spell of the machine hits every kind
        floors.append(
            run_script(PYARROW_FLOOR, "-", source, work / "floor-out.parquet", CHUNK_ROWS)
        )
        scripts.append(
            run_script(
                SCRIPT_FLOOR,
                work / "logreg.joblib",
                source,
                work / "script-out.parquet",
                CHUNK_ROWS,
            )
        )
        for n in choices:
            output = work / f"logreg-{n}.parquet"
            output.unlink(missing_ok=True)
            logreg_runs[n].append(run_job(home, "logreg", source, output, n))
    floor_wall, floor_work = (statistics.median(x) for x in zip(*floors, strict=True))
    script_wall, script_work = (statistics.median(x) for x in zip(*scripts, strict=True))
    for n in choices:
        runs = logreg_runs[n]
        wall_s = statistics.median(float(str(job["wall_s"])) for job in runs)
        run_s = statistics.median(float(str(job["seconds"])) for job in runs)
        rows.append(
            (
                f"LogisticRegression, 1M rows, {_workers_label(n, runs[-1])}",
                f"{wall_s:.2f} s end to end, {run_s:.2f} s inside run() (median of {REPEATS})",
                f"pyarrow alone: {floor_wall:.2f} s end to end, {floor_work:.2f} s after its "
                f"imports (mlserve **{wall_s / floor_wall:.1f}x** end to end, "
                f"**{run_s / floor_work:.1f}x** inside run()); a hand-written joblib + pyarrow "
                f"script: {script_wall:.2f} s, {script_work:.2f} s after its imports (mlserve "
                f"{wall_s / script_wall:.2f}x, {run_s / script_work:.2f}x)",
            )
        )
    logreg_jobs = {
        n: max(runs, key=lambda job: int(str(job["peak_rss_kib"])))
        for n, runs in logreg_runs.items()
    }
    return rows, logreg_jobs


def _worker_choices(cores: int) -> list[int | None]:
    """One worker, one per core, and the default (the job decides)."""
    return [*sorted({1, cores}), None]


def _workers_label(workers: int | None, job: dict[str, object]) -> str:
    """How many workers a row asked for (and, for the default, how many the job used)."""
    used, threads = int(str(job["workers"])), int(str(job.get("threads", 1)))
    if workers is None:
        on = f" on {threads} threads" if threads > 1 else ""
        return f"default workers (used {used}{on})"
    return f"{workers} worker{'s' if workers > 1 else ''}"


if __name__ == "__main__":
    main()
