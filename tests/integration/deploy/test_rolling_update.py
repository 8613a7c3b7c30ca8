"""A Kubernetes rolling update, simulated with real parts: replicas are `mlserve serve` processes
started as the Deployment's container spec says (its arguments or the image's command, the
ConfigMap's variables), HAProxy stands in for the Service and checks each replica with the
readiness probe's path and timings, and the update follows the Deployment's strategy (maxSurge 1,
maxUnavailable 0): start a new replica, let the probe admit it, take an old one out of the
endpoints, run its preStop pause, SIGTERM it. Under steady load, no request may fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from mlserve.cli.main import run
from mlserve.registry import NewVersion, RegistryStore
from mlserve.scaffold.kubernetes import MODEL_DIR, DeploySpec, kubernetes_manifests
from mlserve.settings import Settings

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (apt-get)"),
]

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IMAGE_COMMAND = ["serve", f"--model-dir={MODEL_DIR}"]
"""The image's CMD after `mlserve build` (the Deployment gives no arguments of its own)."""
MLSERVE = str(Path(sys.executable).parent / "mlserve")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Pod:
    """One replica: an `mlserve serve` process started from the container spec."""

    process: subprocess.Popen[bytes]
    port: int
    version: int


@dataclass
class Cluster:
    """The Deployment's objects, the replicas and HAProxy's admin socket."""

    container: dict[str, Any]
    config: dict[str, str]
    grace_s: int
    contexts: dict[int, Path]
    work: Path
    admin_socket: Path
    pods: dict[str, Pod] = field(default_factory=dict)

    def start_pod(self, slot: str, version: int, port: int) -> Pod:
        """Start the replica behind ``slot`` serving ``version``'s image, as the container spec
        says, listening on ``port``."""
        args = self.container.get("args") or IMAGE_COMMAND
        args = [a.replace(MODEL_DIR, str(self.contexts[version] / "models")) for a in args]
        home = self.work / f"home-{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
        # The ConfigMap as it is, but each replica needs its own port and home on one machine,
        # and loopback instead of every interface (gRPC off: replicas would share 8081).
        env |= self.config | {
            "MLSERVE_PORT": str(port),
            "MLSERVE_GRPC_PORT": "0",
            "MLSERVE_HOME": str(home),
            "MLSERVE_HOST": "127.0.0.1",
        }
        with (self.work / f"pod-{port}.log").open("wb") as log:
            process = subprocess.Popen(
                [MLSERVE, *args],
                env=env,
                cwd=self.work,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.pods[slot] = Pod(process, port, version)
        return self.pods[slot]

    def admin(self, command: str) -> str:
        """Send one command to HAProxy's runtime API."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.admin_socket))
            sock.sendall(command.encode() + b"\n")
            return sock.recv(65536).decode()

    def terminate(self, slot: str, prestop_s: float) -> int:
        """Delete a pod as Kubernetes does: out of the endpoints, preStop, SIGTERM; exit code."""
        pod = self.pods.pop(slot)
        self.admin(f"set server be/{slot} state maint")
        time.sleep(prestop_s)
        pod.process.terminate()
        return pod.process.wait(timeout=self.grace_s)

    def slot_is_up(self, slot: str) -> bool:
        """Whether HAProxy's health check passed for ``slot``."""
        for line in self.admin("show servers state be").splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[3] == slot:
                return fields[5] == "2"  # srv_op_state 2: running
        return False


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 0.1 s until true, else fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def haproxy_config(work: Path, port: int, probe: dict[str, Any], slots: dict[str, int]) -> str:
    """A Service stand-in: HTTP checks on the readiness probe's path with its timings."""
    servers = "\n".join(f"  server {slot} 127.0.0.1:{p} check" for slot, p in slots.items())
    return f"""global
  stats socket {work}/admin.sock mode 600 level admin
defaults
  mode http
  retries 0
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  balance roundrobin
  option httpchk GET {probe["httpGet"]["path"]}
  http-check expect status 200
  timeout check {probe["timeoutSeconds"]}s
  default-server inter {probe["periodSeconds"]}s fall {probe["failureThreshold"]} rise {probe["successThreshold"]}
{servers}
"""


@pytest.fixture
def cluster(
    tmp_path: Path,
    classifier_file: Path,
    new_version: NewVersion,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Cluster]:
    """Images for iris versions 1 and 2 (`mlserve build` contexts) and the Deployment."""
    home = tmp_path / ".mlserve"
    store = RegistryStore(
        f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"), home / "cache"
    )
    try:
        store.register_version("iris", classifier_file, new_version)
        store.register_version("iris", classifier_file, new_version)
    finally:
        store.close()
    monkeypatch.chdir(tmp_path)
    contexts = {}
    for version in (1, 2):
        contexts[version] = tmp_path / f"image-{version}"
        build = ["build", f"iris:{version}", "--tag", f"iris:{version}", "--engine", "none"]
        assert run(["--home", str(home), *build, "--output", str(contexts[version])]) == 0
    objects = kubernetes_manifests(DeploySpec(name="iris", image="iris:1"))
    (deployment,) = objects["deploy/kubernetes/deployment.yaml"]
    (config_map,) = objects["deploy/kubernetes/configmap.yaml"]
    pod_spec = deployment["spec"]["template"]["spec"]
    work = tmp_path / "cluster"
    work.mkdir()
    result = Cluster(
        container=pod_spec["containers"][0],
        config=config_map["data"],
        grace_s=pod_spec["terminationGracePeriodSeconds"],
        contexts=contexts,
        work=work,
        admin_socket=work / "admin.sock",
    )
    yield result
    for pod in result.pods.values():
        pod.process.kill()
        pod.process.wait()


def test_rolling_update_under_load_fails_no_request(
    cluster: Cluster, iris_frame: pd.DataFrame
) -> None:
    container = cluster.container
    probe = container["readinessProbe"]
    prestop_s = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert Settings.model_fields["port"].default == int(cluster.config["MLSERVE_PORT"])

    # Every replica's slot exists from the start, as Kubernetes endpoints would for pods still
    # starting: the new ones' ports are chosen now and stay down until the probe admits them.
    slots = {"old1": free_port(), "old2": free_port(), "new1": free_port(), "new2": free_port()}
    for slot in ("old1", "old2"):
        cluster.start_pod(slot, 1, slots[slot])
    for slot in ("old1", "old2"):
        port = slots[slot]
        wait_for(lambda port=port: _ready(port), 90, f"replica on {port} to become ready")
    lb_port = free_port()
    config = cluster.work / "haproxy.cfg"
    config.write_text(haproxy_config(cluster.work, lb_port, probe, slots))
    with (cluster.work / "haproxy.log").open("wb") as log:
        haproxy = subprocess.Popen(
            ["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=log
        )
    try:
        wait_for(cluster.admin_socket.exists, 10, "haproxy's admin socket")
        wait_for(
            lambda: [cluster.slot_is_up(s) for s in slots] == [True, True, False, False],
            30,
            "the old replicas up and the new slots down",
        )
        outcomes, stop, threads = _start_load(lb_port, iris_frame)
        try:
            time.sleep(1)
            for old, new in (("old1", "new1"), ("old2", "new2")):
                cluster.start_pod(new, 2, slots[new])
                wait_for(lambda new=new: cluster.slot_is_up(new), 90, f"{new} to pass the probe")
                assert cluster.terminate(old, prestop_s) == 0
            time.sleep(1)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        assert {pod.version for pod in cluster.pods.values()} == {2}
        row = iris_frame[IRIS_FEATURES].iloc[0].tolist()
        body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": row}]}
        for _ in range(10):
            answer = httpx.post(f"http://127.0.0.1:{lb_port}/v2/models/iris/infer", json=body)
            assert answer.json()["model_version"] == "2"
    finally:
        haproxy.terminate()
        haproxy.wait(timeout=10)

    assert sum(outcomes.values()) > 100, outcomes
    assert set(outcomes) <= {"200 v1", "200 v2"}, outcomes
    assert outcomes["200 v2"] > 0


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _start_load(
    port: int, iris_frame: pd.DataFrame
) -> tuple[Counter[str], threading.Event, list[threading.Thread]]:
    """Four clients posting one-row requests through HAProxy on kept-alive connections."""
    row = iris_frame[IRIS_FEATURES].iloc[0].tolist()
    body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": row}]}
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            while not stop.is_set():
                try:
                    response = client.post("/v2/models/iris/infer", json=body)
                    if response.headers.get("content-type") == "application/json":
                        version = response.json().get("model_version", "?")
                        outcome = f"{response.status_code} v{version}"
                    else:  # HAProxy's own error page: no server took the request
                        outcome = f"{response.status_code} from haproxy"
                except httpx.TransportError as exc:
                    outcome = f"error: {type(exc).__name__}"
                with lock:
                    outcomes[outcome] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    return outcomes, stop, threads
