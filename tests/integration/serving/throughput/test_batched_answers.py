"""Concurrent requests of every protocol are batched, and each gets exactly its unbatched answer."""

from __future__ import annotations

from collections import Counter

from serving_harness import LiveServer
from throughput_harness import FrameMaker, Reference, check, flood, growth, mixed_probes, scrape

FLOOD_SIZE = 240


def test_concurrent_requests_are_batched_and_answered_as_if_alone(
    live_server: LiveServer, project_reference: Reference, project_frames: dict[str, FrameMaker]
) -> None:
    probes = mixed_probes(project_reference, project_frames, FLOOD_SIZE, seed=7)
    before = scrape(live_server)
    responses = flood(live_server, probes)
    after = scrape(live_server)

    for index, (probe, response) in enumerate(zip(probes, responses, strict=True)):
        check(probe, response, label=str(index))
    requests = Counter(p.model for p in probes)
    rows = Counter[str]()
    for probe in probes:
        rows[probe.model] += probe.rows
    shared_calls = 0
    for model, count in requests.items():
        labels = {"model": model, "version": project_reference.versions[model]}
        # every row computed exactly once, every request queued exactly once
        assert growth(before, after, "mlserve_rows_total", **labels) == rows[model]
        assert growth(before, after, "mlserve_batch_size_sum", **labels) == rows[model]
        assert growth(before, after, "mlserve_queue_wait_seconds_count", **labels) == count
        calls = growth(before, after, "mlserve_batch_size_count", **labels)
        shared_calls += count - calls
        assert after[("mlserve_queue_depth", frozenset(labels.items()))] == 0
    # fewer predict calls than requests: some calls answered several requests
    assert shared_calls > 0
    protocols = Counter(p.protocol for p in probes)
    assert set(protocols) == {"v2-json", "v2-binary", "v1", "mlflow"}
