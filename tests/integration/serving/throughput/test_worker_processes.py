"""`--workers 2`: two processes on one port serve the same version, and one scrape sums them."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import psutil
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from serving_harness import IRIS, LiveServer
from throughput_harness import (
    FrameMaker,
    Reference,
    check,
    flood,
    growth,
    mixed_probes,
    scrape,
    total,
)

REQUESTS = 160
ROUNDS = 2


def requests_per_worker(server: LiveServer, scratch: Path) -> dict[int, float]:
    """Worker pid -> iris requests it counted, read from each worker's own metrics file."""
    children = psutil.Process(server.process.pid).children(recursive=True)
    folders = {c.environ().get("PROMETHEUS_MULTIPROC_DIR") for c in children} - {None}
    assert len(folders) == 1, folders
    counts = {}
    for db in Path(str(folders.pop())).glob("counter_*.db"):
        pid = int(db.stem.rsplit("_", 1)[1])
        alone = scratch / str(pid)
        alone.mkdir()
        shutil.copy(db, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        counts[pid] = sum(
            s.value
            for family in registry.collect()
            for s in family.samples
            if s.name == "mlserve_requests_total" and s.labels.get("model") == IRIS
        )
    return counts


def test_two_workers_answer_alike_and_one_scrape_sums_them(
    two_worker_server: LiveServer,
    project_reference: Reference,
    project_frames: dict[str, FrameMaker],
    tmp_path: Path,
) -> None:
    before = scrape(two_worker_server)
    rows = 0
    for round_ in range(ROUNDS):
        probes = mixed_probes(
            project_reference, {IRIS: project_frames[IRIS]}, REQUESTS // ROUNDS, seed=30 + round_
        )
        for index, (probe, response) in enumerate(
            zip(probes, flood(two_worker_server, probes), strict=True)
        ):
            check(probe, response, label=f"{round_}-{index}")
        rows += sum(p.rows for p in probes)
    after = scrape(two_worker_server)

    version = project_reference.versions[IRIS]
    labels = {"model": IRIS, "version": version}
    # one scrape, whichever worker answers it, holds the sum of both workers' counts
    assert growth(before, after, "mlserve_requests_total", **labels) == REQUESTS
    assert growth(before, after, "mlserve_rows_total", **labels) == rows
    assert growth(before, after, "mlserve_batch_size_sum", **labels) == rows
    # each worker loaded the same version: the lowest readiness across workers is 1
    ready = {
        dict(ls)["version"]: v
        for (name, ls), v in after.items()
        if name == "mlserve_model_ready" and dict(ls).get("model") == IRIS
    }
    assert ready == {version: 1.0}
    per_worker = requests_per_worker(two_worker_server, tmp_path)
    assert sum(per_worker.values()) == total(after, "mlserve_requests_total", model=IRIS)
    assert len([pid for pid, count in per_worker.items() if count > 0]) == 2, per_worker


def test_every_worker_writes_json_logs(two_worker_server: LiveServer) -> None:
    """Workers are processes of their own: each installs the JSON log handler itself."""
    for _ in range(40):
        httpx.get(f"{two_worker_server.url}/v2/models/{IRIS}", timeout=10)
    loaded = [r for r in two_worker_server.log_records() if r.get("message") == "model loaded"]
    assert len(loaded) >= 2, "each of the two workers logs its model load"
    assert any(r.get("message") == "request" for r in two_worker_server.log_records())
