"""Helpers to run the real `mlserve` command in subprocesses and check what it printed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mlserve.registry import RegistryStore

Result = subprocess.CompletedProcess[str]

_SCRIPT = shutil.which("mlserve", path=str(Path(sys.executable).parent))
COMMAND = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "mlserve"]
"""The installed console script next to this interpreter, else ``python -m mlserve``."""

TIMEOUT_S = 120

STALE_CONFIG = "port: 9999\n"
"""What the ``project`` fixture's mlserve.yaml held before `mlserve init --force` replaced it."""


@dataclass(frozen=True, slots=True)
class Call:
    """One `mlserve` invocation: arguments, working folder and extra environment."""

    args: Sequence[str]
    cwd: Path
    env: Mapping[str, str] = field(default_factory=dict)


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without MLSERVE_* settings, wide and colourless, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MLSERVE_") and k not in ("FORCE_COLOR", "TTY_COMPATIBLE")
    }
    return {**env, "COLUMNS": "200", "NO_COLOR": "1", **(extra or {})}


def run_cli(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> Result:
    """Run `mlserve ARGS` in ``cwd`` and wait for it."""
    return subprocess.run(
        [*COMMAND, *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def run_cli_all(calls: Mapping[str, Call]) -> dict[str, Result]:
    """Run independent invocations side by side, one per CPU; results by key.

    Each invocation spends ~1.5 s importing, so a batch costs what its slowest share does.
    """
    workers = max(2, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            key: pool.submit(lambda c: run_cli(*c.args, cwd=c.cwd, env=c.env), call)
            for key, call in calls.items()
        }
        return {key: future.result() for key, future in futures.items()}


def assert_ok(result: Result) -> None:
    """Exit code 0 and nothing alarming on stderr."""
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "error:" not in result.stderr


def error_lines(result: Result, exit_code: int) -> list[str]:
    """Assert a clean failure (exit code, no traceback, an ``error:`` line); return its lines."""
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, "no message on stderr"
    assert lines[0].startswith("error: "), lines
    return lines


def assert_one_line_error(result: Result, exit_code: int, *fragments: str) -> None:
    """A clean failure whose one-line message contains every fragment."""
    lines = error_lines(result, exit_code)
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def free_port() -> int:
    """A local TCP port nothing listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def open_registry(project: Path) -> Iterator[RegistryStore]:
    """The embedded registry the CLI uses in ``project`` (``.mlserve/``), opened in-process."""
    home = project / ".mlserve"
    store = RegistryStore(
        f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"), home / "cache"
    )
    try:
        yield store
    finally:
        store.close()


@dataclass(frozen=True, slots=True)
class Project:
    """A folder made by `mlserve init --force`, with ``cancer`` trained on its sample data."""

    folder: Path
    init: Result
    train: Result

    @property
    def sample(self) -> Path:
        """The sample dataset `init` wrote."""
        return self.folder / "data" / "breast_cancer.csv"
