"""Durations as people write them (``90s``, ``30m``, ``1h``, ``2d``, ``1h30m``) and back."""

from __future__ import annotations

import math
import re

from mlserve.errors import InvalidInput

UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
"""Seconds per unit."""
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: NUMBER+UNIT parts (s, m, h, d, w), or a bare number of seconds.

    Raises InvalidInput for anything else, and for zero or more than ten years.
    """
    cleaned = text.strip().lower()
    seconds: float | None = None
    try:
        seconds = float(cleaned)
    except ValueError:
        if cleaned and _PART.sub("", cleaned) == "":
            seconds = sum(float(n) * UNIT_S[unit] for n, unit in _PART.findall(cleaned))
    if seconds is None or not math.isfinite(seconds):
        raise InvalidInput(
            f"invalid duration {text!r}: use a number and a unit, e.g. 90s, 30m, 1h, 2d or 1h30m"
        )
    if not 0 < seconds <= 10 * 365 * UNIT_S["d"]:
        raise InvalidInput(f"invalid duration {text!r}: it must be more than 0 and at most 10y")
    return seconds


def format_duration(seconds: float) -> str:
    """A short label: 3600 -> ``1h``, 5400 -> ``1h30m``, 45 -> ``45s``."""
    remaining = round(seconds)
    if remaining <= 0:
        return f"{seconds:g}s"
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        size = int(UNIT_S[unit])
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
