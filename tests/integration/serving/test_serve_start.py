"""What `mlserve serve` says when it starts: on a terminal a banner and text log lines (the
versions it serves among them), elsewhere JSON lines; a port already taken is one line and
exit code 6, before any model loads."""

from __future__ import annotations

import os
import pty
import select
import socket
import subprocess
import time

import pytest
from serving_harness import MLSERVE, ServingProject, free_port, server_environment

READ_TIMEOUT_S = 90.0


def test_a_taken_port_is_one_line_and_exit_code_6(serving_project: ServingProject) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [MLSERVE, "serve", "--port", str(port), "--grpc-port", "0"],
            cwd=serving_project.root,
            env=server_environment(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 6, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another server? choose another port with --port)"
    ]


def test_a_taken_grpc_port_is_one_line_and_exit_code_6(serving_project: ServingProject) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        grpc_port = taken.getsockname()[1]
        result = subprocess.run(
            [MLSERVE, "serve", "--port", str(free_port()), "--grpc-port", str(grpc_port)],
            cwd=serving_project.root,
            env=server_environment(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 6, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot listen for gRPC on 127.0.0.1:{grpc_port}")


def test_on_a_terminal_a_banner_and_text_logs_say_what_is_served(
    serving_project: ServingProject,
) -> None:
    port, grpc_port = free_port(), free_port()
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [MLSERVE, "serve", "--port", str(port), "--grpc-port", str(grpc_port)],
        cwd=serving_project.root,
        env={**server_environment(), "COLUMNS": "200", "TERM": "dumb"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        start_new_session=True,
    )
    os.close(follower)
    output = ""
    try:
        deadline = time.monotonic() + READ_TIMEOUT_S
        while ": first load done" not in output:
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"no 'first load done' line:\n{output}")
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                output += os.read(leader, 65536).decode(errors="replace")
        time.sleep(0.2)  # the rest of that line
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            output += os.read(leader, 65536).decode(errors="replace")
    finally:
        process.terminate()
        process.wait(timeout=60)
        os.close(leader)
    assert "serving every model's production alias" in output
    assert f"REST     http://127.0.0.1:{port}" in output
    assert f"gRPC     127.0.0.1:{grpc_port}" in output
    assert f"docs     http://127.0.0.1:{port}/docs" in output
    loaded = next(line for line in output.splitlines() if ": first load done" in line)
    assert not loaded.lstrip().startswith("{")  # a text line for people, not JSON
    for name, version in serving_project.versions.items():
        assert f"{name}:{version}" in loaded
