"""Fixtures shared by integration tests in several folders: a real PostgreSQL server.

The server is started as ../shared/TESTING.md says: initdb refuses root, so it runs as the
postgres user, on a free loopback port with its own data folder. `.ci/run` installs Debian's
postgresql; without it the tests that ask for it skip here and fail in CI.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_process import free_port, postgres_bin


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL server on a loopback port; stopped after the module."""
    bin_dir = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="mlserve-pg-"))
    subprocess.run(["chown", "postgres:postgres", str(folder)], check=True)
    data, port = folder / "data", free_port()

    def as_postgres(*command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True
        )

    as_postgres(
        str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync",
        "-E", "UTF8", "--locale=C.UTF-8",
    )  # fmt: skip
    as_postgres(
        str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-t", "30",
        "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start",
    )  # fmt: skip
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
