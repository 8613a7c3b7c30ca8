"""What runs where chunks are scored: a per-process model cache and the chunk task.

Both engines load the model once per worker process and keep it here, keyed by its sha256:
the local engine from the version folder (in the pool's initializer), the Dask engine from a
``ModelPackage`` that was broadcast to every worker once. A chunk task then scores its chunk
and writes the chunk's files itself, so results never travel back through the coordinator.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from mlserve.batch.checkpoint import ChunkReport, JobState, PartFormat
from mlserve.batch.chunks import Chunk
from mlserve.batch.scoring import ScoringOptions, score_chunk
from mlserve.batch.writers import write_chunk
from mlserve.errors import InvalidInput, MlserveError
from mlserve.inputs import ModelLimits, RowChecker, probe_limits
from mlserve.runtimes import Runtime, load_runtime
from mlserve.types import MANIFEST_FILE, read_manifest

# Per-process state by necessity: a worker process outlives every task that uses its model.
_RUNTIMES: dict[str, _Loaded] = {}
_LOCK = threading.Lock()
_LOAD_NUMBERS = itertools.count(1)
_LOAD_ERRORS: dict[str, MlserveError] = {}


@dataclass(frozen=True, slots=True)
class _Loaded:
    """A model loaded in this process: its runtime, what it takes (probed once) and which load
    this was."""

    runtime: Runtime
    limits: ModelLimits
    load_id: str

    @classmethod
    def from_folder(cls, folder: Path, sha256: str, safe: bool) -> _Loaded:
        runtime = load_runtime(folder, expected_sha256=sha256, safe=safe)
        limits = probe_limits(runtime, read_manifest(folder).reference_profile)
        return cls(runtime, limits, _load_id())


@dataclass(frozen=True, slots=True)
class ModelPackage:
    """A version folder's files as bytes, for workers that cannot read the client's disk."""

    sha256: str
    files: dict[str, bytes]

    @classmethod
    def from_folder(cls, folder: Path, sha256: str) -> ModelPackage:
        """The model file and manifest of a verified version folder."""
        manifest = read_manifest(folder)
        names = (manifest.model_file, MANIFEST_FILE)
        return cls(sha256, {name: (folder / name).read_bytes() for name in names})


@dataclass(frozen=True, slots=True)
class ChunkTask:
    """One chunk to score, and where its files go."""

    chunk: Chunk
    state_root: Path
    options: ScoringOptions
    model_sha256: str
    part_format: PartFormat = "arrow"
    threads: int = 1
    """Scoring threads for this chunk (``score_chunk``); more than 1 only where the runtime
    scales with threads."""


def load_model(folder: Path, sha256: str, safe: bool) -> None:
    """Load the model into this process's cache unless it is there (a pool initializer)."""
    with _LOCK:
        if sha256 not in _RUNTIMES:
            _RUNTIMES[sha256] = _Loaded.from_folder(folder, sha256, safe)


def start_pool_worker(
    folder: Path, sha256: str, safe: bool, lifeline: Connection, native_threads: int | None = None
) -> None:
    """Initializer of a local pool worker: exit with the coordinator, then load the model.

    ``lifeline`` is the read end of a pipe only the coordinator writes to; it reads EOF when
    the coordinator dies, however it dies. ``native_threads`` caps the threads of the native
    pools (OpenMP, BLAS) the model computes on, for this process's share of the cores.
    """
    threading.Thread(
        target=_exit_with_coordinator, args=(lifeline,), name="lifeline", daemon=True
    ).start()
    try:
        load_model(folder, sha256, safe)
    except MlserveError as exc:  # the coordinator loads it too and reports why; chunks re-raise
        _LOAD_ERRORS[sha256] = exc
    if native_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(native_threads)  # for the rest of this process's life


def _exit_with_coordinator(lifeline: Connection) -> None:
    """End this process once the coordinator is gone.

    A pool worker whose coordinator was killed (SIGKILL, OOM) would otherwise wait for work
    forever: it cannot tell, and the forkserver it came from waits for it. Leaving mid-chunk is
    safe: files are committed by rename, and an unfinished chunk is redone on resume.
    """
    with contextlib.suppress(EOFError, OSError):
        while True:
            lifeline.recv_bytes()
    os._exit(1)


def cached_runtime(sha256: str) -> Runtime:
    """The runtime this process loaded for ``sha256``; raises KeyError when it has none."""
    return _RUNTIMES[sha256].runtime


def load_package(package: ModelPackage, safe: bool) -> None:
    """Load a broadcast model into this process's cache unless it is there."""
    with _LOCK:
        if package.sha256 in _RUNTIMES:
            return
        folder = Path(tempfile.mkdtemp(prefix="mlserve-model-"))
        try:
            for name, data in package.files.items():
                (folder / name).write_bytes(data)
            _RUNTIMES[package.sha256] = _Loaded.from_folder(folder, package.sha256, safe)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def run_chunk(task: ChunkTask) -> ChunkReport:
    """Score a chunk with the cached model and write its part, rejects and done-marker."""
    if task.model_sha256 in _LOAD_ERRORS:
        raise _LOAD_ERRORS[task.model_sha256]
    loaded = _RUNTIMES[task.model_sha256]
    runtime = loaded.runtime
    if task.options.proba and not runtime.has_proba:
        raise InvalidInput("--proba: this model does not give probabilities (no predict_proba)")
    threads = task.threads if runtime.scales_with_threads else 1
    checker = RowChecker(runtime.signature, loaded.limits, task.options.policy)
    scored = score_chunk(task.chunk, runtime, checker, task.options, threads=threads)
    return write_chunk(
        JobState(task.state_root, task.part_format),
        task.chunk.seq,
        scored,
        records=task.chunk.records,
        loaded_by=loaded.load_id,
        with_id=task.options.id_column is not None,
    )


def run_packaged_chunk(task: ChunkTask, package: ModelPackage, safe: bool) -> ChunkReport:
    """The Dask task: make sure the broadcast model is loaded here, then run the chunk."""
    load_package(package, safe)
    return run_chunk(task)


def _load_id() -> str:
    """Names one model load: host, process and a counter, so a job can count its loads."""
    return f"{socket.gethostname()}:{os.getpid()}:{next(_LOAD_NUMBERS)}"
