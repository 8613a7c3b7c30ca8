"""Safe overload: a full queue answers 503 with Retry-After at once, an expired request 504 without
being computed, and the server recovers afterwards with flat memory."""

from __future__ import annotations

from collections import Counter

import httpx
import psutil
from serving_harness import LiveServer
from throughput_harness import (
    FOREST,
    Probe,
    SlowProject,
    check,
    flood,
    forest_frame,
    growth,
    mixed_probes,
    scrape,
    send,
)

FLOOD_SIZE = 150
MEMORY_FLOODS = 3
RSS_MARGIN_BYTES = 16 * 1024 * 1024
"""Allowed RSS growth over several floods once the first one warmed the server up."""


def forest_probes(project: SlowProject, count: int, seed: int) -> list[Probe]:
    """Small requests (1-3 rows) for the forest over every protocol."""
    return mixed_probes(project.reference, {FOREST: forest_frame}, count, seed=seed, max_rows=3)


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    """How many responses had each status code."""
    return Counter(r.status_code for r in responses)


def labels_of(project: SlowProject, **extra: str) -> dict[str, str]:
    """Metric labels of the served forest."""
    return {"model": FOREST, "version": project.version, **extra}


def test_a_full_queue_answers_503_with_retry_after_and_recovers(
    overload_server: LiveServer, slow_project: SlowProject
) -> None:
    probes = forest_probes(slow_project, FLOOD_SIZE, seed=1)
    before = scrape(overload_server)
    responses = flood(overload_server, probes)
    after = scrape(overload_server)

    counts = statuses(responses)
    assert set(counts) <= {200, 503}, counts
    assert counts[503] > 0, counts
    assert counts[200] > 0, counts
    answered_rows = 0
    for index, (probe, response) in enumerate(zip(probes, responses, strict=True)):
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
            assert "queue" in response.json()["error"]
        else:
            check(probe, response, label=str(index))
            answered_rows += probe.rows
    labels = labels_of(slow_project)
    rejected = growth(
        before, after, "mlserve_rejected_requests_total", **labels, reason="overloaded"
    )
    assert rejected == counts[503]
    computed_rows = growth(before, after, "mlserve_batch_size_sum", **labels)
    counted_rows = growth(before, after, "mlserve_rows_total", **labels)
    assert computed_rows == answered_rows
    assert counted_rows == answered_rows
    assert after[("mlserve_queue_depth", frozenset(labels.items()))] == 0
    # recovered: requests one at a time are all answered
    for index, probe in enumerate(forest_probes(slow_project, 6, seed=2)):
        check(probe, send(overload_server, probe), label=f"after-{index}")


def test_memory_stays_flat_under_repeated_floods(
    overload_server: LiveServer, slow_project: SlowProject
) -> None:
    server = psutil.Process(overload_server.process.pid)
    flood(overload_server, forest_probes(slow_project, FLOOD_SIZE, seed=10))  # warm-up
    baseline = server.memory_info().rss
    for round_ in range(MEMORY_FLOODS):
        responses = flood(
            overload_server, forest_probes(slow_project, FLOOD_SIZE, seed=11 + round_)
        )
        assert set(statuses(responses)) <= {200, 503}
    grown = server.memory_info().rss - baseline
    assert grown < RSS_MARGIN_BYTES, f"RSS grew by {grown / 2**20:.1f} MiB"
    assert send(overload_server, forest_probes(slow_project, 1, seed=20)[0]).status_code == 200


def test_requests_expiring_in_the_queue_get_504_and_are_never_computed(
    deadline_server: LiveServer, slow_project: SlowProject
) -> None:
    probes = forest_probes(slow_project, FLOOD_SIZE, seed=3)
    before = scrape(deadline_server)
    responses = flood(deadline_server, probes)
    after = scrape(deadline_server)

    counts = statuses(responses)
    assert set(counts) <= {200, 504}, counts
    assert counts[504] > 0, counts
    assert counts[200] > 0, counts
    answered_rows = 0
    for index, (probe, response) in enumerate(zip(probes, responses, strict=True)):
        if response.status_code == 504:
            assert "waited" in response.json()["error"]
        else:
            check(probe, response, label=str(index))
            answered_rows += probe.rows
    labels = labels_of(slow_project)
    expired = growth(before, after, "mlserve_rejected_requests_total", **labels, reason="deadline")
    assert expired == counts[504]
    answered_504 = growth(before, after, "mlserve_requests_total", **labels, status="504")
    assert answered_504 == counts[504]
    # computed rows (rows of predict calls) are exactly the rows of answered requests
    computed_rows = growth(before, after, "mlserve_batch_size_sum", **labels)
    counted_rows = growth(before, after, "mlserve_rows_total", **labels)
    assert computed_rows == answered_rows
    assert counted_rows == answered_rows
    assert after[("mlserve_queue_depth", frozenset(labels.items()))] == 0
    for index, probe in enumerate(forest_probes(slow_project, 3, seed=4)):
        check(probe, send(deadline_server, probe), label=f"after-{index}")
