"""A real PostgreSQL server that a test can stop and start again on the same port and data folder.

Started as ../shared/TESTING.md says (initdb refuses root, so it runs as the postgres user, on a
free loopback port with its own folder). conftest.py's ``postgres_url`` serves tests that never
stop the server; fault tests own one of these.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

START_TIMEOUT_S = 30


def postgres_bin() -> Path:
    """The folder of initdb and pg_ctl; skips (fails in CI) when PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        reason = "PostgreSQL is not installed (apt-get install -y postgresql; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return Path(found[-1]).parent


def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """One initialized data folder and the port its server listens on when running."""

    bin_dir: Path
    folder: Path
    port: int
    is_running: bool = False

    @classmethod
    def initialized(cls) -> PostgresServer:
        """A fresh data folder (initdb), not started."""
        bin_dir = postgres_bin()
        folder = Path(tempfile.mkdtemp(prefix="mlserve-pg-faults-"))
        subprocess.run(["chown", "postgres:postgres", str(folder)], check=True)
        server = cls(bin_dir, folder, free_port())
        server._as_postgres(
            "initdb", "-D", str(server.data), "-U", "postgres", "-A", "trust", "--no-sync",
            "-E", "UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        return server

    @property
    def data(self) -> Path:
        """The data folder (the same one across restarts)."""
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start on the same port and data folder; returns once it accepts connections."""
        self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-w",
            "-t", str(START_TIMEOUT_S),
            "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )  # fmt: skip
        self.is_running = True

    def stop(self) -> None:
        """Fast shutdown: open transactions are rolled back, every connection is cut; returns
        once the server is gone."""
        self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", str(START_TIMEOUT_S), "stop"
        )
        self.is_running = False

    def create_database(self, name: str) -> str:
        """Create ``name`` and return its URL."""
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(text(f"CREATE DATABASE {name}"))
        finally:
            admin.dispose()
        return self.url(name)

    def remove(self) -> None:
        """Stop if running, then delete the data folder."""
        if self.is_running:
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _as_postgres(self, program: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin_dir / program), *args],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_S + 30,
        )
