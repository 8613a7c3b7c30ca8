"""The README's examples run, in order, as a user would type them: none can go stale.

Every fenced block is run, unless the line above it says why not
(`<!-- not run by the tests: REASON -->`, for blocks that need a cluster, a container engine
or your own database, which other tests cover). Shell blocks run in one project folder made by
the quickstart; `mlserve serve` starts the server in the background (the only change to what
is written), and `localhost:8080`/`:8081` become the test's free ports. Python blocks run with
this interpreter; YAML blocks must load as settings.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mlserve.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent
FENCE = re.compile(
    r"(?:^<!-- not run by the tests: (?P<why>.+?) -->\n)?^```(?P<lang>\w*)\n(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
BLOCK_TIMEOUT_S = 300

# `mlserve serve ...` starts the server in the background and waits until it is ready; any other
# `mlserve` command runs as written.
PREAMBLE = """
set -euo pipefail
mlserve() {
  if [ "$1" = serve ]; then
    shift
    command mlserve serve --port "$README_PORT" --grpc-port "$README_GRPC_PORT" "$@" \\
      > "$README_LOGS/server.log" 2>&1 &
    echo $! > "$README_LOGS/server.pid"
    for _ in $(seq 600); do
      curl -fsS "http://127.0.0.1:$README_PORT/v2/health/ready" >/dev/null 2>&1 && return 0
      kill -0 "$(cat "$README_LOGS/server.pid")" 2>/dev/null || { cat "$README_LOGS/server.log"; return 1; }
      sleep 0.1
    done
    cat "$README_LOGS/server.log"; return 1
  fi
  command mlserve "$@"
}
"""


@dataclass(frozen=True)
class Block:
    """One fenced block of the README."""

    line: int
    lang: str
    body: str
    skipped_because: str | None


def blocks() -> list[Block]:
    """Every fenced block, in order."""
    text = README.read_text(encoding="utf-8")
    return [
        Block(text.count("\n", 0, m.start("body")), m["lang"], m["body"], m["why"])
        for m in FENCE.finditer(text)
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def localized(body: str, port: int, grpc_port: int) -> str:
    """``body`` with the README's ports replaced by the test's."""
    for host in ("localhost", "127.0.0.1"):
        body = body.replace(f"{host}:8080", f"127.0.0.1:{port}")
        body = body.replace(f"{host}:8081", f"127.0.0.1:{grpc_port}")
    return body


def test_every_block_is_run_or_says_why_not() -> None:
    found = blocks()
    assert len(found) > 15
    for block in found:
        if block.skipped_because is None:
            assert block.lang in ("bash", "python", "yaml"), (block.line, block.lang)


def test_the_readme_examples_run_in_order(tmp_path: Path) -> None:
    port, grpc_port = free_port(), free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    env.update(
        PATH=f"{BIN}:{env['PATH']}",
        README_PORT=str(port),
        README_GRPC_PORT=str(grpc_port),
        README_LOGS=str(logs),
    )
    cwd = tmp_path
    ran = 0
    try:
        for block in blocks():
            if block.skipped_because is not None:
                continue
            body = localized(block.body, port, grpc_port)
            if block.lang == "yaml":
                Settings.model_validate(yaml.safe_load(body))
                continue
            command = (
                ["bash", "-c", PREAMBLE + body]
                if block.lang == "bash"
                else [sys.executable, "-c", body]
            )
            result = subprocess.run(
                command, cwd=cwd, env=env, capture_output=True, text=True,
                timeout=BLOCK_TIMEOUT_S, check=False,
            )  # fmt: skip
            assert result.returncode == 0, (
                f"README line {block.line} exited {result.returncode}:\n{block.body}\n"
                f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
            )
            ran += 1
            match = re.search(r"\bcd (\S+)", block.body)
            if match:  # the quickstart's `cd`: later blocks run in the project it made
                cwd = cwd / match[1]
    finally:
        pid_file = logs / "server.pid"
        if pid_file.exists():
            subprocess.run(["kill", pid_file.read_text().strip()], check=False)
    assert ran >= 10
    assert (cwd / "scores.parquet").is_file()  # the batch example wrote its output


pytestmark = pytest.mark.slow
