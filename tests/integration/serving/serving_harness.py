"""Start and stop real `mlserve serve` processes on free loopback ports, and talk to them.

Plain functions and a dataclass (not fixtures) so tests can start servers with their own
settings; conftest.py builds the shared ones from these.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from mlserve.registry import NewVersion, RegistryStore
from mlserve.runtimes import dump_sklearn
from mlserve.training import normalize_features
from mlserve.types import Signature

MLSERVE = str(Path(sys.executable).with_name("mlserve"))
"""The console script of the venv running the tests."""

START_TIMEOUT_S = 90.0
"""Generous: other test runs may share this machine's two cores."""
STOP_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 30.0

IRIS = "iris"
"""Numeric classifier (a Pipeline registered with register_version): versions 1 and 2."""
CHURN = "churn"
"""Classifier with categorical features and nulls, trained by mlserve.training.train."""
PRICE = "price"
"""Regressor trained by mlserve.training.train."""

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CHURN_FEATURES = ["plan", "region", "monthly", "tenure"]
PRICE_FEATURES = ["x1", "x2"]


@dataclass(frozen=True)
class ServingProject:
    """A project folder with a registry, and the production models loaded in this process."""

    root: Path
    estimators: dict[str, Any]
    """Model name -> the fitted scikit-learn object of its production version."""
    versions: dict[str, str]
    """Model name -> its production version."""
    artifact_folders: dict[str, Path]
    signatures: dict[str, list[str]]
    """Model name -> feature names in signature order."""

    def predict(self, name: str, rows: Any) -> np.ndarray:
        """In-process predictions of the production version, for comparing with the server's."""
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        if not isinstance(rows, pd.DataFrame):
            frame.columns = self.signatures[name]
        features = normalize_features(frame[self.signatures[name]])
        return np.asarray(self.estimators[name].predict(features))

    def predict_proba(self, name: str, rows: Any) -> np.ndarray:
        """In-process class probabilities of the production version."""
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        if not isinstance(rows, pd.DataFrame):
            frame.columns = self.signatures[name]
        features = normalize_features(frame[self.signatures[name]])
        return np.asarray(self.estimators[name].predict_proba(features))


def free_port() -> int:
    """A port nothing listens on right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without MLSERVE_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    env.update(extra or {})
    return env


@dataclass
class LiveServer:
    """A running `mlserve serve` process and where it listens."""

    process: subprocess.Popen[bytes]
    port: int
    stderr_path: Path
    cwd: Path
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:51234."""
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        """Everything the server wrote to stderr so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines on stderr, parsed (other lines are skipped)."""
        records = []
        for line in self.stderr().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    records.append(json.loads(line))
        return records

    def wait_for_log(self, predicate: Any, timeout_s: float = 10.0) -> dict[str, Any]:
        """The first log record matching ``predicate``, waiting for it to be written."""
        deadline = time.monotonic() + timeout_s
        while True:
            for record in self.log_records():
                if predicate(record):
                    return record
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching log record in:\n{self.stderr()[-4000:]}")
            time.sleep(0.05)

    def wait_until(self, path: str, expect: Any, timeout_s: float = START_TIMEOUT_S) -> None:
        """Poll GET ``path`` until ``expect(response)`` holds; fail early if the process dies."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=5.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"server exited with {self.process.returncode}:\n{self.stderr()[-4000:]}"
                    )
                try:
                    if expect(client.get(path)):
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"server not ready in {timeout_s}s:\n{self.stderr()[-4000:]}"
                    )
                time.sleep(0.05)

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Poll /v2/health/ready until 200."""
        self.wait_until("/v2/health/ready", lambda r: r.status_code == 200, timeout_s)

    def wait_loaded(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Poll /v1/models until no model is still loading (for servers that never get ready)."""

        def settled(response: httpx.Response) -> bool:
            models = response.json().get("models", []) if response.status_code == 200 else []
            return bool(models) and all(m["state"] != "loading" for m in models)

        self.wait_until("/v1/models", settled, timeout_s)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait for the exit code; kill the process group if it will not stop."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(self.process)
            raise

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        shutdown(self)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server and anything it started (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def shutdown(server: LiveServer) -> None:
    """Teardown: stop gracefully when possible, never leave a process behind."""
    try:
        server.stop()
    except subprocess.TimeoutExpired:
        pass
    finally:
        kill_group(server.process)


def launch(
    cwd: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
) -> LiveServer:
    """Start `mlserve serve ARGS --port FREE` in ``cwd`` without waiting for it (gRPC off
    unless ARGS give a ``--grpc-port``: servers side by side would all want 8081)."""
    port = free_port()
    log_dir = log_dir or cwd
    stderr_path = log_dir / f"server-{port}.stderr"
    grpc = [] if "--grpc-port" in args else ["--grpc-port", "0"]
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [MLSERVE, "serve", *args, *grpc, "--port", str(port)],
            cwd=cwd,
            env=server_environment(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group, so teardown can kill it whole
        )
    return LiveServer(process, port, stderr_path, cwd, dict(headers or {}))


@contextlib.contextmanager
def running_server(
    cwd: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    wait: str = "ready",
) -> Iterator[LiveServer]:
    """A started server, waited for (``ready``, ``loaded`` or ``none``), stopped afterwards."""
    server = launch(cwd, *args, env=env, headers=headers, log_dir=log_dir)
    try:
        if wait == "ready":
            server.wait_ready()
        elif wait == "loaded":
            server.wait_loaded()
        yield server
    finally:
        shutdown(server)


# -- request helpers -------------------------------------------------------------------------------


def v2_tensor(name: str, values: Any, datatype: str, *, flat: bool = True) -> dict[str, Any]:
    """A JSON input tensor; ``flat`` sends data as one list, else nested like ``values``."""
    array = np.asarray(values)
    data = array.reshape(-1).tolist() if flat else array.tolist()
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}


def v2_matrix_request(rows: Any, datatype: str = "FP64", **extra: Any) -> dict[str, Any]:
    """An OIP request with one 2-D tensor named input-0."""
    return {"inputs": [v2_tensor("input-0", rows, datatype)], **extra}


def decode_binary_response(response: httpx.Response) -> dict[str, np.ndarray]:
    """Outputs of an OIP response, JSON or with Triton binary data, as numpy arrays."""
    header_length = response.headers.get("inference-header-content-length")
    body = response.content
    length = int(header_length) if header_length is not None else len(body)
    document = json.loads(body[:length])
    offset = length
    outputs: dict[str, np.ndarray] = {}
    for output in document["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            data = output["data"]
            array = np.asarray(data, dtype=object if output["datatype"] == "BYTES" else None)
        else:
            raw = body[offset : offset + size]
            offset += size
            array = _from_raw(raw, output["datatype"])
        outputs[output["name"]] = array.reshape(output["shape"])
    assert offset == len(body), "binary data left over"
    return outputs


def _from_raw(raw: bytes, datatype: str) -> np.ndarray:
    if datatype != "BYTES":
        dtypes = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "BOOL": "?"}
        return np.frombuffer(raw, dtype=dtypes[datatype])
    items, offset = [], 0
    while offset < len(raw):
        length = int.from_bytes(raw[offset : offset + 4], "little")
        items.append(raw[offset + 4 : offset + 4 + length].decode())
        offset += 4 + length
    return np.asarray(items, dtype=object)


def binary_request(
    inputs: list[tuple[str, np.ndarray, str]], **document: Any
) -> tuple[bytes, dict[str, str]]:
    """A request body with every input as Triton binary data, and its headers."""
    tensors, chunks = [], []
    for name, array, datatype in inputs:
        if datatype == "BYTES":
            chunk = b"".join(
                len(v).to_bytes(4, "little") + v
                for v in (str(x).encode() for x in array.reshape(-1))
            )
        else:
            chunk = np.ascontiguousarray(array).tobytes()
        tensors.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(chunk)},
            }
        )
        chunks.append(chunk)
    header = json.dumps({"inputs": tensors, **document}).encode()
    headers = {
        "inference-header-content-length": str(len(header)),
        "content-type": "application/octet-stream",
    }
    return header + b"".join(chunks), headers


WORKERS_READY_TIMEOUT_S = 90.0


def wait_for_every_worker(server: LiveServer, workers: int = 2) -> None:
    """Each fresh connection may reach any worker: wait until every worker logged its first
    load (a worker that has not started yet cannot answer a probe), then for many ready
    answers in a row."""
    deadline = time.monotonic() + WORKERS_READY_TIMEOUT_S
    while sum(r.get("message") == "first load done" for r in server.log_records()) < workers:
        assert server.process.poll() is None, server.stderr()[-3000:]
        assert time.monotonic() < deadline, server.stderr()[-3000:]
        time.sleep(0.05)
    in_a_row = 0
    while in_a_row < 20:
        assert server.process.poll() is None, server.stderr()[-3000:]
        assert time.monotonic() < deadline, server.stderr()[-3000:]
        try:
            response = httpx.get(
                f"{server.url}/v2/health/ready", headers={"connection": "close"}, timeout=5
            )
            in_a_row = in_a_row + 1 if response.status_code == 200 else 0
        except httpx.TransportError:
            in_a_row = 0
        if not in_a_row:
            time.sleep(0.05)


def open_store(root: Path) -> RegistryStore:
    """The registry `mlserve serve` finds when run in ``root`` with default settings."""
    home = root / ".mlserve"
    return RegistryStore(
        f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"), home / "cache"
    )


@contextlib.contextmanager
def registry(root: Path) -> Iterator[RegistryStore]:
    """An open registry of ``root``, closed afterwards."""
    store = open_store(root)
    try:
        yield store
    finally:
        store.close()


def register(
    store: RegistryStore, name: str, estimator: Any, signature: Signature, folder: Path
) -> str:
    """Register ``estimator`` as the next version of ``name`` (its file written in ``folder``);
    return its number."""
    folder.mkdir(parents=True)
    path = dump_sklearn(estimator, folder / "model.joblib")
    version = store.register_version(
        name, path, NewVersion(framework="sklearn", signature=signature)
    )
    return str(version.version)
