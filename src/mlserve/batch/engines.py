"""Where chunks are scored: this process, or a pool of local worker processes.

An engine takes chunk tasks lazily and yields each chunk's report as it finishes, keeping at
most a few chunks per worker in flight: that, with the streaming reader, is what bounds memory.
The Dask engine (``dask_engine.py``) has the same shape.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from mlserve.batch.checkpoint import ChunkReport
from mlserve.batch.pinning import PinnedModel
from mlserve.batch.workers import ChunkTask, load_model, run_chunk, start_pool_worker
from mlserve.errors import MlserveError

IN_FLIGHT_PER_WORKER = 2
"""Chunks queued per worker: one being scored, one ready to start."""

PRELOAD_MODULES = (
    "mlserve.batch.workers",
    "sklearn.pipeline",
    "sklearn.compose",
    "sklearn.preprocessing",
    "sklearn.impute",
    "sklearn.linear_model",
    "sklearn.ensemble",
)
"""Imported once by the forkserver, so each worker forks with them instead of importing them
(unpickling a scikit-learn model imports its modules; a missing one is skipped)."""


class Engine(Protocol):
    """Scores chunk tasks somewhere and reports each finished chunk."""

    name: str
    workers: int

    def map_chunks(self, tasks: Iterator[ChunkTask]) -> Iterator[ChunkReport]:
        """Run ``tasks`` (pulled lazily) and yield their reports in completion order."""
        ...

    def close(self) -> None:
        """Stop the workers; pending tasks are dropped (their chunks are redone on resume)."""
        ...


class InlineEngine:
    """One worker: scores in this process, which loaded the model already."""

    name = "local"
    workers = 1

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
    and BLAS pools) can deadlock the child.
    """

    name = "local"

    def __init__(self, model: PinnedModel, *, workers: int, safe: bool) -> None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(PRELOAD_MODULES))
        self.workers = workers
        # Workers hold the read end; when this process dies its write end closes, and they exit.
        lifeline, self._lifeline = context.Pipe(duplex=False)
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=start_pool_worker,
            initargs=(model.folder, model.sha256, safe, lifeline),
        )
        # Start the workers now, in the background: their imports and model loads then overlap
        # with the coordinator's own start-up instead of following it.
        self._warm_up = threading.Thread(target=self._pool.submit, args=(os.getpid,), daemon=True)
        self._warm_up.start()

    def map_chunks(self, tasks: Iterator[ChunkTask]) -> Iterator[ChunkReport]:
        """Keep every worker busy with at most IN_FLIGHT_PER_WORKER chunks each."""
        limit = self.workers * IN_FLIGHT_PER_WORKER
        pending: set[Future[ChunkReport]] = set()
        source = iter(tasks)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < limit:
                    task = next(source, None)
                    if task is None:
                        exhausted = True
                    else:
                        pending.add(self._pool.submit(run_chunk, task))
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=_seq_of):
                    yield future.result()
        except BrokenProcessPool:
            raise MlserveError(
                "a batch worker process died (out of memory, or killed); finished chunks are "
                "saved: run the same command again to resume"
            ) from None

    def close(self) -> None:
        """Stop the workers, dropping queued chunks."""
        self._warm_up.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._lifeline.close()


def _seq_of(future: Future[ChunkReport]) -> int:
    """Order for reports finishing together (failed futures first, so errors surface)."""
    return -1 if future.exception() is not None else future.result().seq


def local_engine(model: PinnedModel, *, workers: int, safe: bool) -> Engine:
    """The local engine: in this process for one worker, else a process pool."""
    if workers <= 1:
        return InlineEngine(model, safe=safe)
    return ProcessPoolEngine(model, workers=workers, safe=safe)
