"""`make demo`'s script: it waits for a slow server, and says why when the server never comes.

The script runs as `make demo` runs it, in its own folder; a wrapper stands in for the `mlserve`
command where a test needs the server slow (it sleeps, then runs the real command).
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "scripts" / "demo.sh"
MLSERVE = Path(sys.executable).with_name("mlserve")

pytestmark = pytest.mark.slow


def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def slow_mlserve(folder: Path, delay_s: float) -> Path:
    """A command that runs `mlserve`, after ``delay_s`` seconds for `mlserve serve`."""
    wrapper = folder / "slow-mlserve"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        # sleep's output goes nowhere: a sleep orphaned by the script's kill must not hold
        # the test's pipes open
        f'if [ "$1" = serve ]; then sleep {delay_s} </dev/null >/dev/null 2>&1; fi\n'
        f'exec {MLSERVE} "$@"\n',
        encoding="utf-8",
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def run_demo(folder: Path, port: int, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the demo script in ``folder`` on ``port``, not on a terminal."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    environment.update(DEMO_DIR=str(folder / "demo"), DEMO_PORT=str(port), **env)
    return subprocess.run(
        ["bash", str(DEMO)],
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_the_demo_waits_for_a_slow_server_then_answers(tmp_path: Path) -> None:
    result = run_demo(tmp_path, free_port(), MLSERVE=str(slow_mlserve(tmp_path, 12)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "waiting for the server to be ready" in result.stdout
    answer = result.stdout.split("It answers:", 1)[1]
    assert '"predictions":["malignant"]' in answer
    assert "stopping the server" in result.stdout


def test_a_server_that_cannot_start_is_reported_with_its_last_words(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        result = run_demo(tmp_path, port)
    assert result.returncode != 0
    assert "make demo failed: the server exited with code" in result.stderr
    assert "last lines of" in result.stderr
    assert "address already in use" in result.stderr.lower()


def test_a_server_that_never_gets_ready_is_given_up_after_the_bound(tmp_path: Path) -> None:
    slow = slow_mlserve(tmp_path, 60)
    result = run_demo(tmp_path, free_port(), MLSERVE=str(slow), DEMO_READY_TIMEOUT_S="3")
    assert result.returncode != 0
    assert "make demo failed: the server was not ready within 3 s" in result.stderr
