"""Where chunks are scored: this process, a pool of local worker processes, or both.

An engine takes chunk tasks lazily and yields each chunk's report as it finishes, keeping at
most a few chunks per worker in flight: that, with the streaming reader, is what bounds memory.
The Dask engine (``dask_engine.py``) has the same shape.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any, Protocol

from threadpoolctl import threadpool_limits

from mlserve.batch import forkserver
from mlserve.batch.checkpoint import ChunkReport
from mlserve.batch.pinning import PinnedModel
from mlserve.batch.scoring import stop_threads
from mlserve.batch.workers import (
    ChunkTask,
    cached_runtime,
    load_model,
    run_chunk,
    start_pool_worker,
)
from mlserve.errors import MlserveError

log = logging.getLogger(__name__)

IN_FLIGHT_PER_WORKER = 2
"""Chunks queued per worker: one being scored, one ready to start."""

RecordsLeft = Callable[[], int | None]
"""Records the job has not scored yet (None when unknown); asked once the first chunk is done."""

MIN_WORKER_START_S = 0.5
"""Least time a worker is assumed to take to start (fork, imports left, model load): the
measured model load is near zero when this process had the model cached already."""


class Engine(Protocol):
    """Scores chunk tasks somewhere and reports each finished chunk."""

    name: str
    workers: int
    threads: int
    """Threads each scoring process predicts a chunk on (1 unless ``AutoEngine`` chose more)."""
    scores_here: bool
    """True when this process scores chunks itself (then it has no time to spare)."""

    def map_chunks(self, tasks: Iterator[ChunkTask]) -> Iterator[ChunkReport]:
        """Run ``tasks`` (pulled lazily) and yield their reports in completion order."""
        ...

    def close(self) -> None:
        """Stop the workers; pending tasks are dropped (their chunks are redone on resume)."""
        ...


class InlineEngine:
    """One worker: scores in this process, which loaded the model already."""

    name = "local"
    threads = 1
    workers = 1
    scores_here = True

    def __init__(self, model: PinnedModel, *, safe: bool) -> None:
        load_model(model.folder, model.sha256, safe)

    def map_chunks(self, tasks: Iterator[ChunkTask]) -> Iterator[ChunkReport]:
        """Score each task in turn."""
        for task in tasks:
            yield run_chunk(task)

    def close(self) -> None:
        """Nothing to stop."""


class ProcessPoolEngine:
    """``workers`` processes, each loading the model once when it starts.

    Workers come from a forkserver, never ``fork``: forking a parent that runs threads (pyarrow
    and BLAS pools) can deadlock the child. With ``score_here``, this process scores chunks too
    whenever every worker has its queue full, so it is one more worker rather than a reader
    that mostly waits; it also keeps the job moving while the workers start.
    """

    name = "local"
    threads = 1

    def __init__(
        self,
        model: PinnedModel,
        *,
        workers: int,
        safe: bool,
        score_here: bool = False,
        cores: int | None = None,
    ) -> None:
        context = forkserver.forkserver_context()
        self.scores_here = score_here
        self._pool_workers = workers
        self.workers = workers + 1 if score_here else workers
        # Each scoring process gets its share of the cores for a model's own native threads
        # (OpenMP, BLAS): a HistGradientBoosting model otherwise runs one thread per core in
        # every process, and the processes fight over the cores (spinning OpenMP threads).
        native_threads = max(1, (cores or forkserver.available_cores()) // self.workers)
        self._native_limits: Any = None
        if score_here:
            load_model(model.folder, model.sha256, safe)
            self._native_limits = threadpool_limits(native_threads)
        # Workers hold the read end; when this process dies its write end closes, and they exit.
        lifeline, self._lifeline = context.Pipe(duplex=False)
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=start_pool_worker,
            initargs=(model.folder, model.sha256, safe, lifeline, native_threads),
        )
        # Start the workers now, in the background: their imports and model loads then overlap
        # with the coordinator's own start-up instead of following it. Until one is ready, a
        # submit blocks (the pool waits for the forkserver to fork it), so with score_here
        # nothing is submitted before then.
        self._ready = threading.Event()
        self._warm_up = threading.Thread(target=self._start_workers, daemon=True)
        self._warm_up.start()

    def _start_workers(self) -> None:
        """Run a trivial task, which starts a worker; then chunks may go to the pool."""
        try:
            with contextlib.suppress(BrokenProcessPool):  # the first chunk submitted says so
                wait([self._pool.submit(os.getpid)])
        finally:
            self._ready.set()

    def map_chunks(self, tasks: Iterator[ChunkTask]) -> Iterator[ChunkReport]:
        """Keep every worker busy with at most IN_FLIGHT_PER_WORKER chunks each."""
        limit = self._pool_workers * IN_FLIGHT_PER_WORKER
        pending: set[Future[ChunkReport]] = set()
        source = iter(tasks)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < limit and self._may_submit():
                    task = next(source, None)
                    if task is None:
                        exhausted = True
                    else:
                        pending.add(self._pool.submit(run_chunk, task))
                if self.scores_here and not exhausted:
                    task = next(source, None)
                    if task is None:
                        exhausted = True
                    else:
                        yield run_chunk(task)
                    done = {future for future in pending if future.done()}
                    pending -= done
                elif not pending:
                    return
                else:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=_seq_of):
                    yield future.result()
        except BrokenProcessPool:
            raise MlserveError(
                "a batch worker process died (out of memory, or killed); finished chunks are "
                "saved: run the same command again to resume"
            ) from None

    def _may_submit(self) -> bool:
        """False while the workers start, when this process has better to do than wait."""
        return self._ready.is_set() or not self.scores_here

    def close(self) -> None:
        """Stop the workers, dropping queued chunks."""
        self._warm_up.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._lifeline.close()
        if self._native_limits is not None:
            self._native_limits.restore_original_limits()


HELPER_MIN_SAVING = 0.25
"""Least share of a chunk's time helpers must be expected to save before they start. The
estimate rests on one chunk timed on a machine whose speed varies from run to run, and a wrong
yes costs more than a wrong no: a linear model, quicker to score than to ship, ran 3x slower
with a helper (a 5M-row LogisticRegression job whose first chunk happened to ship fast), while
a forest kept alone runs at one core's speed."""


SELF_PARALLEL_CORES = 1.25
"""Cores a model's own scoring may keep busy before helpers are out of the question: a
HistGradientBoosting pipeline predicts on every core through OpenMP, so with a helper two
processes shared the same cores (1M rows: 6.1-6.8 s inside ``run()`` against 2.9 s alone).
Alone it keeps 1.9 cores busy, but only 1.1-1.4 while a forkserver still imports beside it;
single-threaded models measure 1.0-1.05."""


@dataclass(frozen=True, slots=True)
class ChunkCost:
    """What one chunk cost this process: reading, scoring and writing it, and pickling it.

    Pickling is what sending the chunk to a worker costs here (and about as much there).
    """

    records: int
    read_s: float
    score_s: float
    ship_s: float = 0.0
    score_cpu_s: float | None = None
    """CPU time of all this process's threads while scoring: above ``score_s`` when the model
    spreads its own work over several cores (OpenMP, BLAS); None when not measured."""

    @property
    def cores_used(self) -> float:
        """How many cores scoring kept busy (1 when not measured)."""
        if self.score_cpu_s is None or self.score_s <= 0:
            return 1.0
        return self.score_cpu_s / self.score_s


def helpers_pay_off(
    first: ChunkCost, records_left: int | None, helpers: int, start_s: float
) -> bool:
    """True when ``helpers`` worker processes should finish the job sooner than this one alone.

    With helpers, this process still reads every chunk, sends most of them, and scores what
    the helpers leave it, so a chunk costs about ``max(read + ship, (read + score + 2 * ship)
    / (helpers + 1))`` instead of ``read + score``. The time saved over the records left must
    beat ``start_s``, the time a worker takes to start, counted as pure loss (it is not, as
    this process keeps scoring meanwhile). Unknown work left counts as plenty. Either way the
    chunk must come out at least HELPER_MIN_SAVING faster, and a model that already scored on
    several cores by itself gets none (see SELF_PARALLEL_CORES).
    """
    if helpers < 1 or first.records < 1 or first.cores_used >= SELF_PARALLEL_CORES:
        return False
    alone_s = first.read_s + first.score_s
    shared_s = max(first.read_s + first.ship_s, (alone_s + 2 * first.ship_s) / (helpers + 1))
    if shared_s > (1 - HELPER_MIN_SAVING) * alone_s:
        return False
    if records_left is None:
        return True
    return (alone_s - shared_s) * records_left / first.records > start_s


def threads_pay_off(first: ChunkCost, threads: int) -> bool:
    """True when scoring on ``threads`` threads should cut a chunk's time by HELPER_MIN_SAVING.

    Reading stays on one thread, so a chunk takes about ``read + score / threads``; threads
    start at once and ship nothing, so unlike helpers nothing has to be repaid.
    """
    if threads < 2 or first.records < 1:
        return False
    alone_s = first.read_s + first.score_s
    return first.read_s + first.score_s / threads <= (1 - HELPER_MIN_SAVING) * alone_s


class AutoEngine:
    """The default local engine: this process alone, plus helper processes when they pay off.

    The first chunk is scored here and timed, and when a core is idle the second too (the
    first pays for warm-ups). When that shows that the model, not reading, takes the time, that
    the model does not already score on several cores by itself, and that the job is long
    enough to repay starting workers (``helpers_pay_off``), one worker process per other idle
    core (``forkserver.idle_cores``) starts and this process keeps scoring alongside them; otherwise (a fast model, a small job, no idle core) no worker is
    started at all. Only the forkserver they fork from starts early (``forkserver.start_early``),
    and only when a core is idle: it imports scikit-learn there while this process reads and
    scores, so workers that are wanted start in milliseconds. On a busy machine nothing starts
    early: there, worker imports slowed a job that then did not use them.

    A model whose predictions scale with threads (``Runtime.scales_with_threads``: a forest,
    bare or after row-wise transforms as ``mlserve train`` builds them) gets no helper
    processes: when the first chunk shows it pays (``threads_pay_off``), this process scores
    each chunk on one thread per idle core, with nothing to start, ship or load again (a
    1M-row RandomForest job: 4.1 s inside ``run()`` with a helper, 3.5 s on threads).
    """

    name = "local"

    def __init__(
        self, model: PinnedModel, *, cores: int, safe: bool, records_left: RecordsLeft
    ) -> None:
        self._model, self._safe, self._cores = model, safe, cores
        self._records_left = records_left
        forkserver.start_early(cores)
        started = time.perf_counter()
        load_model(model.folder, model.sha256, safe)
        self._start_s = max(time.perf_counter() - started, MIN_WORKER_START_S)
        self._pool: ProcessPoolEngine | None = None
        self.workers = 1
        self.threads = 1
        self.scores_here = True

    def map_chunks(self, tasks: Iterator[ChunkTask]) -> Iterator[ChunkReport]:
        """Score the first chunks here, then the rest here, on threads or with helpers, as
        they showed."""
        source = iter(tasks)
        cpu_before = forkserver.cpu_sample()
        timed = _score_timed(source, ship=False)
        if timed is None:
            return
        report, cost = timed
        helpers = forkserver.idle_cores(self._cores, _busy_elsewhere(cpu_before))
        yield report
        if cached_runtime(self._model.sha256).scales_with_threads:
            if threads_pay_off(cost, helpers + 1):
                self.threads = helpers + 1
                log.info("batch scoring threads", extra={"threads": self.threads})
            for task in source:
                yield run_chunk(replace(task, threads=self.threads))
            return
        if helpers > 0:
            # The first chunk pays for warm-ups (a model's first call, its own thread pool, a
            # forkserver still importing on the other core): the second one decides.
            timed = _score_timed(source, ship=True)
            if timed is None:
                return
            report, cost = timed
            yield report
        if helpers_pay_off(cost, self._records_left(), helpers, self._start_s):
            log.info(
                "batch helpers started",
                extra={"helpers": helpers, "chunk_s": round(cost.score_s, 3)},
            )
            self._pool = ProcessPoolEngine(
                self._model, workers=helpers, safe=self._safe, score_here=True, cores=self._cores
            )
            self.workers = self._pool.workers
            yield from self._pool.map_chunks(source)
        else:
            for task in source:
                yield run_chunk(task)

    def close(self) -> None:
        """Stop the helpers, if any started, else the forkserver started early for them."""
        stop_threads()
        if self._pool is not None:
            self._pool.close()
        else:
            forkserver.stop_unused()


def _score_timed(
    source: Iterator[ChunkTask], *, ship: bool
) -> tuple[ChunkReport, ChunkCost] | None:
    """Read and score the next chunk here, timing each step (and, with ``ship``, pickling it
    as sending it to a helper would); None when there is none left."""
    started = time.perf_counter()
    task = next(source, None)
    if task is None:
        return None
    read, cpu_started = time.perf_counter(), time.process_time()
    report = run_chunk(task)
    scored, score_cpu_s = time.perf_counter(), time.process_time() - cpu_started
    if ship:
        pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
    shipped = time.perf_counter()
    cost = ChunkCost(
        task.chunk.records, read - started, scored - read, shipped - scored, score_cpu_s
    )
    return report, cost


def _busy_elsewhere(since: forkserver.CpuSample | None) -> float:
    """Cores other processes keep busy: as watched before our forkserver started, else since
    ``since`` (while this process scored its first chunk), else from the load average."""
    at_start = forkserver.take_busy_elsewhere_at_start()
    if at_start is not None:
        return at_start  # later samples would count our own forkserver's imports
    now = forkserver.cpu_sample()
    if since is not None and now is not None:
        return forkserver.busy_elsewhere(since, now)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(0.0, load - 1)  # the load average counts this process too


def _seq_of(future: Future[ChunkReport]) -> int:
    """Order for reports finishing together (failed futures first, so errors surface)."""
    return -1 if future.exception() is not None else future.result().seq


def local_engine(
    model: PinnedModel, *, workers: int | None, cores: int, safe: bool, records_left: RecordsLeft
) -> Engine:
    """The local engine: ``workers`` processes as asked (1: this one), or AutoEngine for None."""
    if workers is None:
        return AutoEngine(model, cores=cores, safe=safe, records_left=records_left)
    if workers <= 1:
        return InlineEngine(model, safe=safe)
    return ProcessPoolEngine(model, workers=workers, safe=safe, cores=cores)
