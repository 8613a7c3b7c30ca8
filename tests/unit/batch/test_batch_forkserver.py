"""The early forkserver: CPU sampling that decides it, and stopping it when no worker came."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import forkserver as mp_forkserver

import pytest

from mlserve.batch import forkserver
from mlserve.batch.forkserver import CpuSample, busy_elsewhere, cpu_sample, idle_cores


def test_busy_elsewhere_subtracts_this_process_own_cpu() -> None:
    start = CpuSample(machine_busy_s=100.0, own_s=10.0, at=50.0)
    end = CpuSample(machine_busy_s=102.0, own_s=11.0, at=51.0)  # 2 s busy in 1 s, 1 s ours
    assert busy_elsewhere(start, end) == pytest.approx(1.0)
    assert busy_elsewhere(end, end) == 0.0


def test_idle_cores_leave_one_for_this_process() -> None:
    assert idle_cores(2, 0.0) == 1
    assert idle_cores(2, 0.9) == 0  # a nearly busy other core gets no helper
    assert idle_cores(2, 1.0) == 0
    assert idle_cores(4, 1.2) == 2
    assert idle_cores(1, 0.0) == 0


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat")
def test_cpu_sample_sees_this_process_spin() -> None:
    start = cpu_sample()
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    end = cpu_sample()
    assert start is not None
    assert end is not None
    assert end.own_s - start.own_s >= 0.15
    assert end.machine_busy_s - start.machine_busy_s >= 0.1  # our spin is machine time too


def test_a_stopped_forkserver_is_gone_and_a_later_pool_starts_a_new_one() -> None:
    forkserver.forkserver_context()
    mp_forkserver.ensure_running()
    pid = mp_forkserver._forkserver._forkserver_pid
    assert pid is not None
    forkserver._stop_forkserver()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
    with ProcessPoolExecutor(1, mp_context=forkserver.forkserver_context()) as pool:
        assert pool.submit(os.getpid).result(timeout=60) != os.getpid()
    assert mp_forkserver._forkserver._forkserver_pid not in (None, pid)


def test_stop_unused_leaves_a_forkserver_it_did_not_start() -> None:
    early = forkserver._EarlyStart()  # never started: nothing of its own to stop
    forkserver.forkserver_context()
    mp_forkserver.ensure_running()
    pid = mp_forkserver._forkserver._forkserver_pid
    early.stop()
    assert mp_forkserver._forkserver._forkserver_pid == pid
    os.kill(pid, 0)  # still running


def test_the_cli_can_start_it_before_the_heavy_imports() -> None:
    # `mlserve batch` imports this module first: it must not pull in pandas or scikit-learn.
    code = (
        "import sys, mlserve.batch.forkserver, mlserve.monitoring.batch_metrics; "
        "print(sorted(m for m in ('pandas', 'sklearn', 'pyarrow', 'sqlalchemy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_package_still_offers_its_names() -> None:
    import mlserve.batch as package

    assert callable(package.run)
    assert package.JobSpec.__name__ == "JobSpec"
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = package.no_such_name  # type: ignore[attr-defined]
