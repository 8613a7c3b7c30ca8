"""The local engine's worker processes fork from a forkserver; this module starts it early.

Importing scikit-learn, pandas and pyarrow takes a job about two seconds before it reads a
row. A forkserver started first does the same imports on another core meanwhile, so when the
job decides it wants workers (``engines.AutoEngine``, after timing its first chunk) they fork
ready-made in milliseconds instead of importing everything only then. It is started only when
another core is idle: on a busy machine its imports would slow a job that may not use it.

This module imports nothing heavy (``mlserve.batch`` loads its names lazily for it), so the
CLI can call :func:`start_early` before importing the rest of the batch code.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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

SAMPLE_S = 0.1
"""How long the machine's CPU use is watched before deciding whether a core is idle."""

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU seconds used so far by the whole machine and by this process (all its threads)."""

    machine_busy_s: float
    own_s: float
    at: float


def available_cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_sample() -> CpuSample | None:
    """The machine's busy CPU time (from /proc/stat) and this process's; None where unknown."""
    try:
        first_line = Path("/proc/stat").read_text().split("\n", 1)[0]
    except OSError:
        return None
    fields = [int(value) for value in first_line.split()[1:9]]
    if len(fields) < 5:
        return None
    idle = fields[3] + fields[4]  # idle and iowait; guest time is inside user and nice already
    times = os.times()
    return CpuSample(
        (sum(fields) - idle) / _CLOCK_TICKS, times.user + times.system, time.monotonic()
    )


def busy_elsewhere(start: CpuSample, end: CpuSample) -> float:
    """Cores that other processes kept busy, on average, between two samples."""
    wall_s = end.at - start.at
    if wall_s <= 0:
        return 0.0
    others_s = (end.machine_busy_s - start.machine_busy_s) - (end.own_s - start.own_s)
    return max(0.0, others_s / wall_s)


def forkserver_context() -> multiprocessing.context.ForkServerContext:
    """The forkserver context with mlserve's preloaded modules (set before it starts)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD_MODULES))
    return context


class _EarlyStart:
    """The one early start of this process: its CPU watch, and what that measured."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.watcher: threading.Thread | None = None
        self.busy_elsewhere: float | None = None
        """What other processes used while we watched, before our forkserver ran."""
        self.taken = False
        self.started = False
        """The forkserver was started here (and not yet stopped)."""

    def start(self, cores: int) -> None:
        with self.lock:
            if self.watcher is not None or cores < 2:
                return
            self.watcher = threading.Thread(
                target=self._watch_and_start, args=(cores,), name="forkserver-start", daemon=True
            )
            self.watcher.start()

    def _watch_and_start(self, cores: int) -> None:
        start = cpu_sample()
        time.sleep(SAMPLE_S)
        end = cpu_sample()
        if start is None or end is None:
            return
        self.busy_elsewhere = busy_elsewhere(start, end)
        if idle_cores(cores, self.busy_elsewhere) < 1:
            return
        from multiprocessing import forkserver

        with self.lock:
            forkserver_context()
            forkserver.ensure_running()  # spawns it; it imports there while this process goes on
            self.started = True

    def stop(self) -> None:
        with self.lock:
            watcher = self.watcher
        if watcher is not None:
            watcher.join()
        with self.lock:
            if not self.started:
                return
            self.started = False
            _stop_forkserver()

    def take(self) -> float | None:
        with self.lock:
            watcher = self.watcher
        if watcher is None:
            return None
        watcher.join()
        with self.lock:
            if self.taken:
                return None
            self.taken = True
            return self.busy_elsewhere


_early = _EarlyStart()


def start_early(cores: int) -> None:
    """Watch the CPU for SAMPLE_S in the background; start the forkserver if a core is idle.

    Returns at once. Only the first call in a process does anything; with one core there is
    nothing to gain and nothing is started.
    """
    _early.start(cores)


def stop_unused() -> None:
    """Stop the forkserver :func:`start_early` started, when the job used no worker after all.

    A forkserver still importing would otherwise outlive the job by a second or more, holding
    its standard output and error open (a pipe reading the job's output would wait for it).
    """
    _early.stop()


def _stop_forkserver() -> None:
    """Kill the forkserver and forget it, so a later job starts a new one.

    multiprocessing has no public call for this; ``_stop`` is what CPython's own tests use
    (3.8 to 3.13). It asks the server to stop and waits, which it only notices after its
    imports: hence the kill first. Where the private names differ, the server is left to exit
    on its own once its imports are done.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    stop = getattr(server, "_stop", None)
    if pid is None or stop is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        stop()


def take_busy_elsewhere_at_start() -> float | None:
    """What :func:`start_early` measured, once: later jobs in this process measure anew.

    Waits for the measurement; None if none was made (or it was taken already).
    """
    return _early.take()


def idle_cores(cores: int, busy_elsewhere: float) -> int:
    """Cores left idle besides this process's own, when others keep ``busy_elsewhere`` busy.

    Helpers go only to those: on a shared machine a worker for a core that others keep busy
    only adds its start-up and the cost of sending it rows (under a steady load of two on two
    cores, a 1M-row forest job was slower with a helper than without).
    """
    return max(0, round(cores - 1 - busy_elsewhere))
