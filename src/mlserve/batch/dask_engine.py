"""The Dask engine: the same chunk tasks on Dask's distributed scheduler.

The model travels once: its files are broadcast to every worker, and each worker process
loads it on its first chunk into the cache in ``workers.py`` (keyed by sha256), not once per
chunk. Workers write each chunk's part, rejects and done-marker themselves, under the same
checkpoint rules as the local engine, so the job's state folder must be on storage every worker
can reach (always true for the default LocalCluster).

Dask is an optional extra, imported only when this engine is built.
"""

from __future__ import annotations

import importlib
import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlserve.batch.checkpoint import ChunkReport
from mlserve.batch.engines import IN_FLIGHT_PER_WORKER
from mlserve.batch.pinning import PinnedModel
from mlserve.batch.workers import ChunkTask, ModelPackage, run_packaged_chunk
from mlserve.errors import ConfigError

INSTALL_HINT = "the dask engine needs Dask: pip install 'mlserve[dask]'"
CONNECT_TIMEOUT_S = 30


class DaskEngine:
    """Chunks run as Dask tasks on a LocalCluster of ``workers`` processes, or at ``address``."""

    name = "dask"
    threads = 1
    scores_here = False

    def __init__(
        self,
        model: PinnedModel,
        *,
        workers: int,
        address: str | None,
        safe: bool,
        state_root: Path,
    ) -> None:
        distributed = _import_distributed()
        self._cluster: Any = None
        if address is None:
            self._cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address=None,
            )
            self._client: Any = distributed.Client(self._cluster)
        else:
            try:
                self._client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S)
            except OSError as exc:
                raise ConfigError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        self.workers = max(1, len(self._client.scheduler_info().get("workers", {})))
        self._state_root = state_root
        self._safe = safe
        self._token = uuid.uuid4().hex[:12]  # task keys unique to this run on a shared cluster
        package = ModelPackage.from_folder(model.folder, model.sha256)
        self._package = self._client.scatter(package, broadcast=True, hash=False)

    def map_chunks(self, tasks: Iterator[ChunkTask]) -> Iterator[ChunkReport]:
        """Keep at most IN_FLIGHT_PER_WORKER chunks per worker on the cluster."""
        self._check_shared_storage(self._state_root)
        limit = self.workers * IN_FLIGHT_PER_WORKER
        source = iter(tasks)
        running = _import_distributed().as_completed()
        submitted: set[Any] = set()
        for task in itertools.islice(source, limit):
            future = self._submit(task)
            submitted.add(future)
            running.add(future)
        try:
            for future in running:
                submitted.discard(future)
                report: ChunkReport = future.result()
                yield report
                following = next(source, None)
                if following is not None:
                    queued = self._submit(following)
                    submitted.add(queued)
                    running.add(queued)
        finally:
            if submitted:  # an error or an early stop: drop what is still queued
                self._client.cancel(list(submitted))

    def _check_shared_storage(self, state_root: Path) -> None:
        """Refuse early when some worker cannot write the job's state folder."""
        answers = self._client.run(_can_write, str(state_root))
        blind = sorted(worker for worker, ok in answers.items() if not ok)
        if blind:
            raise ConfigError(
                f"Dask worker(s) {', '.join(blind)} cannot write {state_root}: with --address, "
                "OUTPUT must be on storage that every worker shares"
            )

    def _submit(self, task: ChunkTask) -> Any:
        return self._client.submit(
            run_packaged_chunk,
            task,
            self._package,
            self._safe,
            pure=False,
            key=f"mlserve-chunk-{task.chunk.seq}-{self._token}",
        )

    def close(self) -> None:
        """Disconnect, and stop the LocalCluster if this engine started one."""
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def _import_distributed() -> Any:
    """The ``distributed`` module, or ConfigError saying how to install it."""
    try:
        return importlib.import_module("distributed")
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None


def _can_write(folder: str) -> bool:
    """Run on each worker: can this process write files into ``folder``?"""
    return os.path.isdir(folder) and os.access(folder, os.W_OK)
