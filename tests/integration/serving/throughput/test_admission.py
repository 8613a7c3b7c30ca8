"""Admission before work (issue 23): a server flooded at many times its capacity answers every
request 200 (correctly) or 503 with Retry-After, loses no accepted request, and keeps answering
its health endpoints. Behaviour only: no timings are asserted."""

from __future__ import annotations

import threading
from collections import Counter

import httpx
from serving_harness import LiveServer
from throughput_harness import (
    FOREST,
    SlowProject,
    check,
    flood,
    forest_frame,
    growth,
    mixed_probes,
    scrape,
)

FLOOD_SIZE = 400
"""Requests sent at once, each on its own connection: the queue holds 8 rows."""
HEALTH_PATHS = ("/v2/health/live", "/v2/health/ready", "/ping", "/health")


def probe_health(url: str, stop: threading.Event, statuses: list[int]) -> None:
    """GET every health endpoint in turn until ``stop``, recording each status."""
    with httpx.Client(base_url=url, timeout=30) as client:
        turn = 0
        while not stop.is_set():
            statuses.append(client.get(HEALTH_PATHS[turn % len(HEALTH_PATHS)]).status_code)
            turn += 1


def test_a_flood_is_answered_200_or_503_and_health_keeps_answering(
    overload_server: LiveServer, slow_project: SlowProject
) -> None:
    probes = mixed_probes(
        slow_project.reference, {FOREST: forest_frame}, FLOOD_SIZE, seed=23, max_rows=3
    )
    before = scrape(overload_server)
    health: list[int] = []
    stop = threading.Event()
    prober = threading.Thread(target=probe_health, args=(overload_server.url, stop, health))
    prober.start()
    try:
        responses = flood(overload_server, probes)
    finally:
        stop.set()
        prober.join(60)
    after = scrape(overload_server)

    counts = Counter(r.status_code for r in responses)
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
    labels = {"model": FOREST, "version": slow_project.version}
    # no accepted request is lost: every row computed was answered, every refusal counted
    assert growth(before, after, "mlserve_batch_size_sum", **labels) == answered_rows
    assert growth(before, after, "mlserve_rows_total", **labels) == answered_rows
    assert (
        growth(before, after, "mlserve_rejected_requests_total", **labels, reason="overloaded")
        == counts[503]
    )
    assert after[("mlserve_queue_depth", frozenset(labels.items()))] == 0
    assert health, "no health probe was answered during the flood"
    assert set(health) == {200}, Counter(health)


def test_a_connection_retrying_at_once_is_still_answered(
    overload_server: LiveServer, slow_project: SlowProject
) -> None:
    """A keep-alive client that ignores Retry-After is held, never dropped: each of its
    requests gets 200 or 503, while a flood keeps the queue full."""
    probes = mixed_probes(slow_project.reference, {FOREST: forest_frame}, 200, seed=24, max_rows=3)
    own = mixed_probes(slow_project.reference, {FOREST: forest_frame}, 6, seed=25, max_rows=3)
    answers: list[httpx.Response] = []

    def retry_at_once() -> None:
        with httpx.Client(base_url=overload_server.url, timeout=60) as client:
            for probe in own:
                answers.append(
                    client.post(probe.path, content=probe.content, headers=probe.headers)
                )

    thread = threading.Thread(target=retry_at_once)
    thread.start()
    flood(overload_server, probes)
    thread.join(120)
    assert len(answers) == len(own)
    for index, (probe, response) in enumerate(zip(own, answers, strict=True)):
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
        else:
            check(probe, response, label=f"own-{index}")
