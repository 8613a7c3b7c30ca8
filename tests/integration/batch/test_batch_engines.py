"""The local engine (inline or a process pool) and the Dask engine write identical outputs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from batch_harness import BatchProject, input_frame
from distributed import LocalCluster
from sklearn.ensemble import RandomForestClassifier
from threadpoolctl import threadpool_info

from mlserve.batch import JobSpec, JobSummary, PinnedModel, Progress, pin_model, run
from mlserve.batch.engines import ProcessPoolEngine
from mlserve.batch.scoring import MIN_THREAD_ROWS


@pytest.fixture(scope="module")
def dask_address() -> Iterator[str]:
    """A two-worker LocalCluster in this process (threads, not processes: starts in a second).

    In-process workers talk over ``inproc://``. The scheduler's HTTP server (metrics, even
    without a dashboard) gets a free port: on its default 8787, a cluster of another test
    process (pytest-xdist, a `mlserve batch --engine dask` under test) makes it warn, and here
    warnings are errors.
    """
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def mixed_input(project: BatchProject) -> Path:
    """A folder with a CSV, a JSON Lines and a Parquet file, each with a few bad rows."""
    folder = project.root / "in"
    folder.mkdir()
    frame = input_frame(1500, bad_every=101)
    frame.iloc[:500].to_csv(folder / "a.csv", index=False)
    frame.iloc[500:1000].to_json(folder / "b.jsonl", orient="records", lines=True)
    frame.iloc[1000:].astype({"f1": str}).to_parquet(folder / "c.parquet", row_group_size=128)
    return folder


@pytest.fixture
def churn(project: BatchProject) -> PinnedModel:
    """churn:1, pinned for fresh jobs."""
    store = project.store()
    try:
        return pin_model(store, "churn:1", project.root / "any.parquet")
    finally:
        store.close()


def score(
    source: Path,
    output: Path,
    model: PinnedModel,
    progress: Callable[[Progress], None] | None = None,
    **options: object,
) -> JobSummary:
    """Run a job in chunks of 70 rows with probabilities; ``options`` override JobSpec fields."""
    spec = JobSpec(str(source), output, chunk_rows=70, id_column="id", proba=True, **options)
    return run(spec, model, progress=progress)


def outputs(output: Path) -> tuple[pd.DataFrame, str]:
    """The output rows and the rejects file's text."""
    return pd.read_parquet(output), output.with_name(output.stem + ".rejects.jsonl").read_text()


@pytest.mark.slow
def test_every_engine_writes_the_same_rows_and_rejects(
    project: BatchProject, mixed_input: Path, churn: PinnedModel, dask_address: str
) -> None:
    root = project.root
    inline = score(mixed_input, root / "inline.parquet", churn, workers=1)
    pool = score(mixed_input, root / "pool.parquet", churn, workers=2)
    dask = score(mixed_input, root / "dask.parquet", churn, engine="dask", address=dask_address)
    assert (inline.rows_read, inline.rows_rejected) == (1500, 14)
    assert (pool.model_loads, dask.engine, dask.workers) == (2, "dask", 2)
    rows, rejects = outputs(root / "inline.parquet")
    assert len(rows) == 1486
    assert rows["id"].dtype == "int64"  # the CSV file's ids too
    assert rejects.count("\n") == 14
    for name in ("pool.parquet", "dask.parquet"):
        other_rows, other_rejects = outputs(root / name)
        assert other_rows.equals(rows), name
        assert other_rejects == rejects, name


@pytest.mark.slow
def test_a_forest_gets_threads_not_helper_processes_and_the_same_rows(
    project: BatchProject,
) -> None:
    project.register(name="forest", model=RandomForestClassifier(n_estimators=60, random_state=0))
    source = project.root / "rows.parquet"
    input_frame(3 * 2 * MIN_THREAD_ROWS, seed=8).to_parquet(source)
    store = project.store()
    try:
        forest = pin_model(store, "forest:1", project.root / "any.parquet")
    finally:
        store.close()
    root = project.root

    def job(output: str, workers: int | None) -> JobSummary:
        spec = JobSpec(source, root / output, chunk_rows=2 * MIN_THREAD_ROWS, workers=workers)
        return run(spec, forest)

    auto, inline, pool = job("auto.parquet", None), job("one.parquet", 1), job("pool.parquet", 2)
    assert (auto.workers, inline.threads, pool.threads) == (1, 1, 1)  # no helper processes
    assert auto.threads in (1, 2)  # 2 when the other core was idle as the job started
    rows = pd.read_parquet(root / "one.parquet")
    assert len(rows) == 6 * MIN_THREAD_ROWS
    assert pd.read_parquet(root / "auto.parquet").equals(rows)
    assert pd.read_parquet(root / "pool.parquet").equals(rows)


@pytest.mark.slow
def test_a_job_started_locally_can_resume_on_dask(
    project: BatchProject, mixed_input: Path, churn: PinnedModel, dask_address: str
) -> None:
    root = project.root
    score(mixed_input, root / "clean.parquet", churn, workers=1)
    done: list[Progress] = []

    def interrupt_after_five(progress: Progress) -> None:
        done.append(progress)
        if len(done) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        score(mixed_input, root / "out.parquet", churn, interrupt_after_five, workers=1)
    resumed = score(mixed_input, root / "out.parquet", churn, engine="dask", address=dask_address)
    assert resumed.chunks_resumed == 5
    resumed_rows, resumed_rejects = outputs(root / "out.parquet")
    clean_rows, clean_rejects = outputs(root / "clean.parquet")
    assert resumed_rows.equals(clean_rows)
    assert resumed_rejects == clean_rejects


@pytest.mark.slow
def test_csv_column_types_come_out_the_same_on_every_engine_when_chunks_disagree(
    project: BatchProject, churn: PinnedModel, dask_address: str
) -> None:
    frame = input_frame(350).astype({"id": str})
    frame.loc[250:, "id"] = [f"A-{i}" for i in range(250, 350)]  # chunks 0-2 ints, 3-4 text
    frame["batch"] = frame.index // 100  # ints in every chunk
    source, root = project.root / "in.csv", project.root
    frame.to_csv(source, index=False)
    engines: dict[str, dict[str, object]] = {
        "inline": {"workers": 1},
        "pool": {"workers": 2},
        "dask": {"engine": "dask", "address": dask_address},
    }
    for name, options in engines.items():
        score(source, root / f"{name}.parquet", churn, passthrough=("batch",), **options)
    score(source, root / "pool.csv", churn, passthrough=("batch",), workers=2)
    rows = pd.read_parquet(root / "inline.parquet")
    assert rows["id"].tolist() == frame["id"].tolist()  # text in every row, as written
    assert rows["batch"].dtype == "int64"
    for name in ("pool", "dask"):
        assert pd.read_parquet(root / f"{name}.parquet").equals(rows), name
    as_text = pacsv.ConvertOptions(column_types={"id": pa.string()})
    written = pacsv.read_csv(root / "pool.csv", convert_options=as_text)
    assert written.column("id").to_pylist() == frame["id"].tolist()


def _native_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info()}


@pytest.mark.slow
def test_scoring_processes_share_the_cores_among_their_native_threads(
    churn: PinnedModel,
) -> None:
    # Two processes on two cores: one OpenMP/BLAS thread each, not one per core in each.
    before = _native_threads()
    engine = ProcessPoolEngine(churn, workers=1, safe=False, score_here=True, cores=2)
    try:
        in_worker = {p["num_threads"] for p in engine._pool.submit(threadpool_info).result(60)}
        here = _native_threads()
    finally:
        engine.close()
    assert in_worker == here == {1}
    assert _native_threads() == before  # the coordinator's own limits are given back
