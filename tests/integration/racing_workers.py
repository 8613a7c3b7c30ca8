"""Several OS processes hitting one registry at the same moment: a worker script's common start
and the launcher that releases them together.

Each worker imports everything, reports ready and spins until the go file appears, so all of
them reach the database within a millisecond or so. A test's script is ``PRELUDE`` plus its
own part, run as ``python -c SCRIPT MODE SHARED WORKER``; ``config.json`` in ``SHARED`` is the
test's, and ``open_store()`` opens the registry it names.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

START_TIMEOUT_S = 60.0

PRELUDE = """
import json, sys, time
from pathlib import Path

from mlserve.registry import NewVersion, RegistryStore
from mlserve.types import Signature

mode, shared, worker = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
config = json.loads((shared / "config.json").read_text())


def wait_for_go():
    (shared / f"ready-{worker}").touch()
    deadline = time.monotonic() + 60
    while not (shared / "go").exists():
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.0005)


def open_store():
    return RegistryStore(
        config["database_url"], config["artifact_root"], Path(config["cache_dir"])
    )

"""


def run_together(script: str, shared: Path, workers: dict[str, str]) -> dict[str, str]:
    """Start one process per worker (name -> mode) running ``script``, release them at once,
    and return each one's stdout; a worker that fails fails the test with its stderr."""
    processes = {
        worker: subprocess.Popen(
            [sys.executable, "-c", script, mode, str(shared), worker],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker, mode in workers.items()
    }
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all((shared / f"ready-{w}").exists() for w in workers):
            crashed = {w: p.returncode for w, p in processes.items() if p.poll() is not None}
            assert not crashed, f"workers exited before the start: {crashed}"
            assert time.monotonic() < deadline, "workers did not get ready in time"
            time.sleep(0.01)
        (shared / "go").touch()
        outputs = {}
        for worker, process in processes.items():
            stdout, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, f"worker {worker} failed:\n{stderr}"
            outputs[worker] = stdout
        return outputs
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()  # the pipes of a worker never read (a test that failed)
