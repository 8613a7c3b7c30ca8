"""Rollouts as the registry stores them: a candidate version beside production, the share of
traffic it answers or shadows, the limits that roll it back, and the audit trail's wording.

The rules for a rollout's settings live here, once: shares are percentages from 0 to 100, an
error-rate limit is a fraction from 0 to 1, a p99 ratio and a window are positive, at least one
request is judged, and a sticky header is a valid HTTP header name. `RegistryStore` checks them
before any change is written.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

from mlserve.errors import InvalidInput
from mlserve.registry.models import RolloutEventRow, RolloutRow

RolloutState = Literal["active", "promoted", "rolled_back"]
RolloutAction = Literal["start", "set", "promote", "rollback"]

ACTIVE: RolloutState = "active"
PROMOTED: RolloutState = "promoted"
ROLLED_BACK: RolloutState = "rolled_back"

MAX_HEADER_LENGTH = 128
"""Longest sticky header name stored (the column's width)."""

# RFC 9110 field names are tokens: letters, digits and these punctuation marks.
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


@dataclass(frozen=True, slots=True)
class RolloutLimits:
    """When a rollout is rolled back automatically; None switches a limit off."""

    max_error_rate: float | None = None
    """Fraction (0-1) of the candidate's requests answered 5xx or failed."""
    max_p99_ratio: float | None = None
    """Candidate p99 latency over production's."""
    window_s: float = 300.0
    """Judged over this trailing window, in seconds."""
    min_requests: int = 100
    """Fewest candidate requests in the window before the candidate is judged."""


@dataclass(frozen=True, slots=True)
class Rollout:
    """One rollout of a candidate version of model ``name``."""

    id: int
    name: str
    production: int
    """The version ``production`` pointed at when the rollout started."""
    candidate: int
    canary: float
    """Percent (0-100) of requests answered by the candidate."""
    shadow: float
    """Percent (0-100) of production's requests also sent to the candidate, answer discarded."""
    sticky_header: str | None
    """Request header whose value picks the version by consistent hashing."""
    limits: RolloutLimits
    state: RolloutState
    reason: str
    """Why it ended; empty while active."""
    started_at: datetime
    updated_at: datetime
    actor: str
    """Who started it."""

    @property
    def is_active(self) -> bool:
        """True until the rollout is promoted or rolled back."""
        return self.state == ACTIVE


@dataclass(frozen=True, slots=True)
class RolloutEvent:
    """One entry of a model's rollout audit trail."""

    name: str
    rollout_id: int
    action: RolloutAction
    detail: str
    """One readable line, e.g. ``canary 10% -> 50%``."""
    actor: str
    at: datetime


def check_settings(
    canary: float, shadow: float, sticky_header: str | None, limits: RolloutLimits
) -> None:
    """Raise InvalidInput naming the first setting out of its range."""
    _check_percent("canary", canary)
    _check_percent("shadow", shadow)
    if sticky_header is not None and not _is_header_name(sticky_header):
        raise InvalidInput(
            f"sticky header {sticky_header!r} is not a valid HTTP header name "
            f"(letters, digits and !#$%&'*+-.^_`|~, at most {MAX_HEADER_LENGTH} characters)"
        )
    rate = limits.max_error_rate
    if rate is not None and not (_is_number(rate) and 0.0 <= rate <= 1.0):
        raise InvalidInput(f"max error rate must be a fraction from 0 to 1, got {rate!r}")
    ratio = limits.max_p99_ratio
    if ratio is not None and not (_is_number(ratio) and math.isfinite(ratio) and ratio > 0):
        raise InvalidInput(f"max p99 ratio must be a positive number, got {ratio!r}")
    window = limits.window_s
    if not (_is_number(window) and math.isfinite(window) and window > 0):
        raise InvalidInput(f"window must be a positive number of seconds, got {window!r}")
    count = limits.min_requests
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidInput(f"min requests must be a whole number of at least 1, got {count!r}")


def _check_percent(what: str, value: float) -> None:
    if not (_is_number(value) and 0.0 <= value <= 100.0):
        raise InvalidInput(f"{what} must be a percentage from 0 to 100, got {value!r}")


def _is_header_name(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= MAX_HEADER_LENGTH
        and _HEADER_NAME.fullmatch(value) is not None
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def describe_start(rollout: Rollout) -> str:
    """The audit line of a new rollout: versions, shares, sticky header and limits."""
    parts = [
        f"candidate {rollout.candidate} beside production {rollout.production}",
        f"canary {percent(rollout.canary)}",
        f"shadow {percent(rollout.shadow)}",
    ]
    if rollout.sticky_header:
        parts.append(f"sticky header {rollout.sticky_header}")
    return ", ".join([*parts, describe_limits(rollout.limits)])


def describe_limits(limits: RolloutLimits) -> str:
    """Limits in words: ``max error rate 2%, max p99 ratio 2x over 300 s (min 100 requests)``."""
    found = []
    if limits.max_error_rate is not None:
        found.append(f"max error rate {percent(limits.max_error_rate * 100)}")
    if limits.max_p99_ratio is not None:
        found.append(f"max p99 ratio {limits.max_p99_ratio:g}x")
    if not found:
        return "no limits"
    return f"{', '.join(found)} over {limits.window_s:g} s (min {limits.min_requests} requests)"


def describe_changes(before: Rollout, after: Rollout) -> str:
    """What `set` changed, as ``canary 10% -> 50%, shadow 0% -> 100%``; empty when nothing."""
    changes = []
    if before.canary != after.canary:
        changes.append(f"canary {percent(before.canary)} -> {percent(after.canary)}")
    if before.shadow != after.shadow:
        changes.append(f"shadow {percent(before.shadow)} -> {percent(after.shadow)}")
    if before.sticky_header != after.sticky_header:
        changes.append(
            f"sticky header {before.sticky_header or 'none'} -> {after.sticky_header or 'none'}"
        )
    if before.limits != after.limits:
        changes.append(
            f"limits {describe_limits(before.limits)} -> {describe_limits(after.limits)}"
        )
    return ", ".join(changes)


def percent(value: float) -> str:
    """A percentage as few digits as it needs: ``10%``, ``2.5%``."""
    return f"{value:g}%"


def to_rollout(name: str, row: RolloutRow) -> Rollout:
    """The Rollout a row holds."""
    return Rollout(
        id=row.id,
        name=name,
        production=row.production,
        candidate=row.candidate,
        canary=row.canary,
        shadow=row.shadow,
        sticky_header=row.sticky_header,
        limits=RolloutLimits(
            max_error_rate=row.max_error_rate,
            max_p99_ratio=row.max_p99_ratio,
            window_s=row.window_s,
            min_requests=row.min_requests,
        ),
        state=cast(RolloutState, row.state),
        reason=row.reason,
        started_at=row.started_at,
        updated_at=row.updated_at,
        actor=row.actor,
    )


def write_settings(
    row: RolloutRow,
    canary: float,
    shadow: float,
    sticky_header: str | None,
    limits: RolloutLimits,
) -> None:
    """Store checked shares, sticky header and limits in a rollout's row."""
    row.canary, row.shadow, row.sticky_header = float(canary), float(shadow), sticky_header
    row.max_error_rate = limits.max_error_rate
    row.max_p99_ratio = limits.max_p99_ratio
    row.window_s = float(limits.window_s)
    row.min_requests = limits.min_requests


def to_rollout_event(name: str, row: RolloutEventRow) -> RolloutEvent:
    """The RolloutEvent a row holds."""
    action = cast(RolloutAction, row.action)
    return RolloutEvent(name, row.rollout_id, action, row.detail, row.actor, row.at)
