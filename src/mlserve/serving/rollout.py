"""Rollouts as the request path sees them: which version answers a request that names only the
model, each arm's record over a trailing window, and the guardrail that ends a rollout.

The registry holds rollouts (`RegistryStore.start_rollout` and friends); the model manager
turns each active one into a `TrafficSplit` at every sync, loads its candidate beside
production, and judges the guardrails against the windows kept here. Every decision on the
request path is a dictionary lookup, one random number or one hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from mlserve.inputs import CheckedRows
from mlserve.logging import new_request_id, request_id_var
from mlserve.monitoring.metrics import ServingMetrics
from mlserve.registry import Rollout, RolloutLimits
from mlserve.serving.batching import input_kind
from mlserve.serving.inference import PREDICT

if TYPE_CHECKING:
    from mlserve.serving.served import ServedVersion

Outputs = dict[str, np.ndarray]

Route = Literal["production", "canary", "sticky", "explicit", "fallback", "shadow"]
"""Why a version answered (`monitoring.predlog_store.ROUTES`, the prediction log's `route`):
the model's name (production), a canary draw, a sticky key, a version the request named in its
path or X-Model-Version header (explicit), production for a failed candidate (fallback), or a
mirrored request (shadow)."""

VERSION_HEADER = "x-model-version"
"""A request naming the version it wants (the same header answers name the version that
answered)."""

BUCKETS = 10_000
"""Sticky keys hash into this many buckets: weights resolve to 0.01 %."""
WINDOW_CAP = 100_000
"""Most answers a window keeps, whatever its span: bounded memory under any load."""


@dataclass(frozen=True, slots=True)
class Arm:
    """Where one request goes: the version and why."""

    version: str
    route: Route


class Routed:
    """One request a rollout routed: to which arm, the version to answer with instead when the
    candidate fails (None for production's requests), and what to record once answered."""

    __slots__ = ("candidate", "failed", "production", "split")

    def __init__(
        self, split: TrafficSplit, candidate: bool, production: ServedVersion | None
    ) -> None:
        self.split = split
        self.candidate = candidate
        self.production = production
        self.failed = False
        """True when the candidate failed and production answered instead."""

    def answered(self, status: int, seconds: float) -> None:
        """Fold the answer into its arm's window: a failure whatever the client saw."""
        self.split.record(self.candidate, seconds, self.failed or status >= 500)


class TrafficSplit:
    """One model's active rollout: the candidate's share of the requests that name only the
    model, by weight or, with a sticky header, by a stable hash of its value."""

    def __init__(self, rollout: Rollout) -> None:
        self.rollout = rollout
        self.candidate = str(rollout.candidate)
        self.sticky_header = rollout.sticky_header.lower() if rollout.sticky_header else None
        self._threshold = round(rollout.canary * BUCKETS / 100)
        self._salt = f"{rollout.name}:{rollout.id}:".encode()
        self.windows = {"production": Window(rollout.limits.window_s)}
        self.windows["candidate"] = Window(rollout.limits.window_s)

    def updated(self, rollout: Rollout) -> TrafficSplit:
        """This split with ``rollout``'s new weights, keeping the windows when it is the same
        rollout (a weight change is not a fresh start)."""
        split = TrafficSplit(rollout)
        if rollout.id == self.rollout.id and rollout.limits == self.rollout.limits:
            split.windows = self.windows
        return split

    def choose(self, key: str | None) -> bool:
        """True when the candidate answers: a sticky ``key`` always gets the same answer for
        one rollout (and keeps it while the weight grows); without one, a weighted draw."""
        if key is not None:
            return sticky_bucket(self._salt, key) < self._threshold
        return random.random() * BUCKETS < self._threshold

    def record(self, candidate: bool, seconds: float, failed: bool) -> None:
        """Fold one answered request into its arm's window."""
        self.windows["candidate" if candidate else "production"].add(seconds, failed)

    def breach(self, now: float | None = None) -> str | None:
        """Why the candidate must be rolled back, or None: its error rate or p99 past the
        rollout's limits over the window, once it answered enough requests."""
        return judge(
            self.rollout.limits,
            self.windows["candidate"].summary(now),
            self.windows["production"].summary(now),
        )


def sticky_bucket(salt: bytes, key: str) -> int:
    """The bucket of a sticky key: the same in every process and every restart."""
    digest = hashlib.blake2b(salt + key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True, slots=True)
class Summary:
    """One arm's answers within the window."""

    requests: int
    errors: int
    p99_s: float

    @property
    def error_rate(self) -> float:
        """Share of the answers that failed (0 with none)."""
        return self.errors / self.requests if self.requests else 0.0


class Window:
    """Answers of the last ``span_s`` seconds: when, how long, whether they failed."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self._answers: deque[tuple[float, float, bool]] = deque(maxlen=WINDOW_CAP)

    def add(self, seconds: float, failed: bool, now: float | None = None) -> None:
        """One answer that took ``seconds``."""
        self._answers.append((time.monotonic() if now is None else now, seconds, failed))

    def summary(self, now: float | None = None) -> Summary:
        """Requests, errors and p99 latency within the window (old answers are dropped)."""
        cutoff = (time.monotonic() if now is None else now) - self.span_s
        while self._answers and self._answers[0][0] < cutoff:
            self._answers.popleft()
        if not self._answers:
            return Summary(0, 0, math.nan)
        latencies = np.fromiter((a[1] for a in self._answers), dtype=float)
        errors = sum(1 for a in self._answers if a[2])
        return Summary(len(latencies), errors, float(np.percentile(latencies, 99)))


def judge(limits: RolloutLimits, candidate: Summary, production: Summary) -> str | None:
    """The broken limit, worded for the audit trail, or None while the candidate holds (or has
    not answered ``min_requests`` yet). The p99 ratio needs as many production answers."""
    if candidate.requests < limits.min_requests:
        return None
    window = f"over {candidate.requests} requests in {limits.window_s:g} s"
    if limits.max_error_rate is not None and candidate.error_rate > limits.max_error_rate:
        return (
            f"candidate error rate {candidate.error_rate:.1%} > "
            f"{limits.max_error_rate:.1%} {window}"
        )
    if (
        limits.max_p99_ratio is not None
        and production.requests >= limits.min_requests
        and production.p99_s > 0
    ):
        ratio = candidate.p99_s / production.p99_s
        if ratio > limits.max_p99_ratio:
            return (
                f"candidate p99 {candidate.p99_s * 1000:.1f} ms is {ratio:.2f}x production's "
                f"{production.p99_s * 1000:.1f} ms (limit {limits.max_p99_ratio:g}x) {window}"
            )
    return None


MAX_SHADOW_WAITING = 256
"""Most mirrored requests waiting for the shadow; more are dropped (and counted), so a slow
shadow can never hold memory hostage."""
SHADOW_CHUNK_ROWS = 1024
"""Most rows the shadow predicts in one call."""
SHADOW_SHARE = 0.10
"""Most of the event loop's time the shadow lane takes: after a chunk that took t seconds it
pauses t * (1 - share) / share. Under saturation the primary path keeps the rest and what the
shadow cannot keep up with is dropped, counted; with spare time everything is mirrored."""
SHADOW_GATHER_S = 0.005
"""The shortest pause between chunks: mirrored requests gather into one predict call."""


@dataclass(slots=True)
class _Mirrored:
    """One answered request waiting for the shadow."""

    request_id: str
    rows: CheckedRows
    outputs: tuple[str, ...]
    answer: Outputs
    answer_s: float


class ShadowMirror:
    """Sends a share of the requests one version answered to the rollout's shadow version too,
    after the answer is sent, and compares the two. The request never waits for it, and what
    the shadow does (fail, lag, be dropped) never reaches the client.

    Mirrored requests wait in a bounded lane; one task at a time stacks those of one input
    kind into a single shadow predict call, compares the chunk in a few array operations and
    pauses so the lane takes at most SHADOW_SHARE of the event loop's time (per-request tasks
    measured 1.78x the primary's p99 at c=8 on a one-core server: bench/results/shadow.md).
    """

    def __init__(self, shadow: ServedVersion, percent: float, metrics: ServingMetrics) -> None:
        self.shadow = shadow
        self.percent = percent
        name, version = shadow.name, shadow.version
        self._regression = not shadow.runtime.classes
        self._results = {
            r: metrics.shadow_requests.labels(name, version, r)
            for r in ("compared", "failed", "dropped")
        }
        self._rows = {
            a: metrics.shadow_rows.labels(name, version, a) for a in ("agree", "disagree", "value")
        }
        self._difference = metrics.shadow_abs_difference.labels(name, version)
        self._latency = {
            arm: metrics.shadow_latency.labels(name, version, arm) for arm in ("primary", "shadow")
        }
        self._waiting: deque[_Mirrored] = deque()
        self._lane: asyncio.Task[None] | None = None

    def offer(
        self, rows: CheckedRows, outputs: tuple[str, ...], answer: Outputs, answer_s: float
    ) -> None:
        """Mirror this answered request with the shadow's probability (never blocks)."""
        if random.random() * 100 >= self.percent:
            return
        if len(self._waiting) >= MAX_SHADOW_WAITING or self.shadow.retired:
            self._results["dropped"].inc()
            return
        request_id = request_id_var.get() or new_request_id()
        self._waiting.append(_Mirrored(request_id, rows, outputs, answer, answer_s))
        if self._lane is None or self._lane.done():
            self._lane = asyncio.get_running_loop().create_task(self._run_lane())

    async def _run_lane(self) -> None:
        """Mirror chunks until none wait, pausing after each within the lane's share."""
        pause_s = SHADOW_GATHER_S
        while self._waiting:
            await asyncio.sleep(pause_s)
            chunk = self._take()
            started = time.perf_counter()
            await self._mirror(chunk)
            spent = time.perf_counter() - started
            pause_s = max(SHADOW_GATHER_S, spent * (1 - SHADOW_SHARE) / SHADOW_SHARE)

    def _take(self) -> list[_Mirrored]:
        """The oldest waiting requests of one input kind and outputs, up to SHADOW_CHUNK_ROWS
        rows (at least one request)."""
        first = self._waiting.popleft()
        chunk, rows = [first], len(first.rows.batch)
        kind = (input_kind(first.rows.batch), first.outputs)
        while self._waiting:
            head = self._waiting[0]
            size = len(head.rows.batch)
            if (
                rows + size > SHADOW_CHUNK_ROWS
                or (input_kind(head.rows.batch), head.outputs) != kind
            ):
                break
            chunk.append(self._waiting.popleft())
            rows += size
        return chunk

    async def _mirror(self, chunk: list[_Mirrored]) -> None:
        """Predict a chunk with the shadow and compare; a failed chunk is retried request by
        request, so one request the shadow refuses does not cost the others' comparisons."""
        started = time.perf_counter()
        requests = [(m.request_id, m.rows) for m in chunk]
        try:
            mirrored = await self.shadow.predict_mirrored(requests, chunk[0].outputs)
        except Exception:  # the shadow's failure is counted, never raised
            if len(chunk) == 1:
                self._results["failed"].inc()
                return
            for one in chunk:
                await self._mirror([one])
            return
        shadow_s = time.perf_counter() - started
        for m in chunk:
            self._latency["primary"].observe(m.answer_s)
            self._latency["shadow"].observe(shadow_s)
        self._results["compared"].inc(len(chunk))
        self._compare([m.answer for m in chunk], mirrored)

    def _compare(self, answers: list[Outputs], mirrored: Outputs) -> None:
        """Count agreeing rows (classification) or add up the differences (regression)."""
        sent_parts = [a.get(PREDICT) for a in answers]
        shadowed = mirrored.get(PREDICT)
        if shadowed is None or any(p is None for p in sent_parts):
            return
        sent = np.concatenate([np.asarray(p) for p in sent_parts if p is not None])
        if len(sent) != len(shadowed):
            return
        if self._regression:
            difference = np.abs(sent.astype(float) - np.asarray(shadowed, float))
            self._difference.inc(float(difference.sum()))
            self._rows["value"].inc(len(difference))
            return
        agree = int(np.count_nonzero(sent == np.asarray(shadowed)))
        self._rows["agree"].inc(agree)
        self._rows["disagree"].inc(len(sent) - agree)


def same_inputs(a: ServedVersion, b: ServedVersion) -> bool:
    """True when rows checked for ``a`` can be given to ``b`` as they are (same features, in
    the same order, of the same kinds): what shadowing needs."""
    described = [(f.name, f.kind) for f in a.runtime.signature.inputs]
    return described == [(f.name, f.kind) for f in b.runtime.signature.inputs]
