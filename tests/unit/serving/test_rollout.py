"""The request path's side of rollouts: weighted and sticky splits, windows, guardrails."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from mlserve.inputs import CheckedRows
from mlserve.logging import request_id_var
from mlserve.monitoring.metrics import ServingMetrics
from mlserve.registry import Rollout, RolloutLimits
from mlserve.serving.inference import PREDICT
from mlserve.serving.rollout import (
    BUCKETS,
    MAX_SHADOW_WAITING,
    ShadowMirror,
    Summary,
    TrafficSplit,
    Window,
    judge,
    sticky_bucket,
)


def rollout(canary: float, *, rollout_id: int = 1, sticky: str | None = None) -> Rollout:
    now = datetime.now(UTC)
    return Rollout(
        id=rollout_id, name="m", production=1, candidate=2, canary=canary, shadow=0.0,
        sticky_header=sticky, limits=RolloutLimits(), state="active", reason="",
        started_at=now, updated_at=now, actor="test",
    )  # fmt: skip


@given(canary=st.floats(0, 100), keys=st.lists(st.text(max_size=20), min_size=1, max_size=50))
def test_a_sticky_key_gets_one_answer_and_keeps_it_while_the_weight_grows(
    canary: float, keys: list[str]
) -> None:
    split = TrafficSplit(rollout(canary, sticky="x-user"))
    grown = split.updated(rollout(min(100.0, canary + 10), sticky="x-user"))
    for key in keys:
        first = split.choose(key)
        assert all(split.choose(key) == first for _ in range(3))
        if first:
            assert grown.choose(key)  # a key on the candidate stays there as the weight grows


def test_sticky_buckets_are_stable_and_spread() -> None:
    assert sticky_bucket(b"m:1:", "user-7") == sticky_bucket(b"m:1:", "user-7")
    buckets = [sticky_bucket(b"m:1:", f"user-{i}") for i in range(20_000)]
    assert all(0 <= b < BUCKETS for b in buckets)
    below = sum(b < BUCKETS // 4 for b in buckets)
    assert abs(below - 5000) < 4.5 * math.sqrt(20_000 * 0.25 * 0.75)


@pytest.mark.parametrize("canary", [0.0, 100.0])
def test_the_extreme_weights_never_and_always_send_to_the_candidate(canary: float) -> None:
    split = TrafficSplit(rollout(canary))
    chosen = {split.choose(None) for _ in range(2000)} | {split.choose(f"k{i}") for i in range(500)}
    assert chosen == {canary == 100.0}


def test_a_window_forgets_answers_older_than_its_span() -> None:
    window = Window(10.0)
    for t in range(20):
        window.add(0.001 * (t + 1), failed=t % 2 == 0, now=float(t))
    summary = window.summary(now=19.0)
    assert summary.requests == 11  # t = 9 .. 19
    assert summary.errors == 5  # even t among 9..19: 10, 12, 14, 16, 18
    assert summary.p99_s == pytest.approx(0.02, rel=0.05)
    assert Window(1.0).summary().requests == 0


def test_guardrails_hold_until_enough_requests_then_name_the_broken_limit() -> None:
    limits = RolloutLimits(max_error_rate=0.05, max_p99_ratio=2.0, window_s=60, min_requests=100)
    production = Summary(500, 0, 0.010)
    assert judge(limits, Summary(99, 99, 1.0), production) is None  # too few to judge
    assert judge(limits, Summary(100, 5, 0.015), production) is None  # at the limits
    broken = judge(limits, Summary(100, 6, 0.015), production)
    assert broken is not None
    assert "error rate 6.0% > 5.0%" in broken
    slow = judge(limits, Summary(100, 0, 0.030), production)
    assert slow is not None
    assert "3.00x" in slow
    # the latency ratio needs as many production answers
    assert judge(limits, Summary(100, 0, 0.030), Summary(10, 0, 0.010)) is None
    assert judge(RolloutLimits(min_requests=1), Summary(100, 100, 9.0), production) is None


def test_a_weight_change_keeps_the_windows_and_a_new_rollout_starts_afresh() -> None:
    split = TrafficSplit(rollout(10))
    split.record(True, 0.01, failed=True)
    assert split.updated(rollout(50)).windows["candidate"].summary().requests == 1
    assert split.updated(rollout(50, rollout_id=2)).windows["candidate"].summary().requests == 0


# -- the shadow lane -----------------------------------------------------------------------------


class FakeShadow:
    """What ShadowMirror uses of a ServedVersion: predicts ``-x`` sign as the class, records
    each call's request ids, and refuses rows whose first value is 99."""

    name, version, retired = "m", "2", False

    def __init__(self) -> None:
        self.runtime = SimpleNamespace(classes=[0, 1])
        self.calls: list[list[str]] = []

    async def predict_mirrored(
        self, requests: list[tuple[str, CheckedRows]], outputs: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        self.calls.append([request_id for request_id, _ in requests])
        batch = np.concatenate([rows.batch for _, rows in requests])
        if (batch[:, 0] == 99).any():
            raise ValueError("the shadow refuses 99")
        return {PREDICT: (batch[:, 0] < 0).astype(int)}


def checked(values: list[float]) -> CheckedRows:
    batch = np.asarray(values, dtype=float).reshape(-1, 1)
    return CheckedRows(batch=batch, rejected=np.zeros(len(values), bool), reasons={})


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"model": "m", "version": "2", **labels}) or 0.0


def test_the_shadow_lane_predicts_waiting_requests_together_and_counts_what_it_drops() -> None:
    registry = CollectorRegistry()
    shadow = FakeShadow()
    mirror = ShadowMirror(cast(Any, shadow), 100.0, ServingMetrics.create(registry))

    async def scenario() -> None:
        # answers sent: class 1 for every row; the shadow says 1 only for negative values
        for i in range(MAX_SHADOW_WAITING + 10):
            token = request_id_var.set(f"r{i}")
            values = [-1.0, 2.0] if i % 2 else [-3.0]
            mirror.offer(checked(values), (PREDICT,), {PREDICT: np.ones(len(values), int)}, 0.001)
            request_id_var.reset(token)
        mirror.offer(checked([99.0]), (PREDICT,), {PREDICT: np.ones(1, int)}, 0.001)
        while mirror._lane is not None and not mirror._lane.done():
            await asyncio.sleep(0.01)
        mirror.offer(checked([99.0]), (PREDICT,), {PREDICT: np.ones(1, int)}, 0.001)
        assert mirror._lane is not None
        await mirror._lane

    asyncio.run(scenario())
    taken = MAX_SHADOW_WAITING
    assert sample(registry, "mlserve_shadow_requests_total", result="dropped") == 11
    assert sample(registry, "mlserve_shadow_requests_total", result="compared") == taken
    assert sample(registry, "mlserve_shadow_requests_total", result="failed") == 1
    # every request was mirrored under its own id, in order, in far fewer calls than requests
    ids = [request_id for call in shadow.calls if len(call) > 1 for request_id in call]
    assert ids == [f"r{i}" for i in range(taken)]
    assert len(shadow.calls) < taken / 10
    rows = sum(2 if i % 2 else 1 for i in range(taken))
    negatives = taken  # one negative value in every request
    assert sample(registry, "mlserve_shadow_rows_total", agreement="agree") == negatives
    assert sample(registry, "mlserve_shadow_rows_total", agreement="disagree") == rows - negatives
