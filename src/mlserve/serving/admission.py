"""Admission before work: whether a version can take a request is decided before its body is read.

Under overload most requests are refused, so a refusal must cost next to nothing: the body is
left unread (uvicorn's parser discards it, keeping the connection), nothing is decoded, and the
503 with Retry-After goes out at once. The queue rule is the batcher's (``refuse_if_full``); what
admission adds is an estimate of the request's rows, which are only known after decoding: its
Content-Length times the rows per byte of the requests this version took before. The estimate
only has to be right near a full queue, and when it is wrong the batcher's own check of the
decoded rows still refuses the request (after decoding it, the cost admission saves).
"""

from __future__ import annotations

import random
from collections.abc import Callable


class RowEstimate:
    """Guesses a request's rows from its body size, from running averages of the body sizes
    and row counts of a version's requests. Event-loop only (not thread safe)."""

    _SMOOTHING = 0.05

    def __init__(self) -> None:
        self._bytes = 0.0
        self._rows = 0.0

    def rows_of(self, body_bytes: int | None) -> int:
        """The estimated rows of a body of ``body_bytes`` (None: length not declared); 1 until
        a request was measured, so a cold version refuses only when its queue is full."""
        if self._rows <= 0:
            return 1
        if body_bytes is None or self._bytes <= 0:
            return max(1, round(self._rows))
        return max(1, round(body_bytes * self._rows / self._bytes))

    def record_bytes(self, body_bytes: int) -> None:
        """Fold in the declared size of an admitted request."""
        self._bytes = _folded(self._bytes, body_bytes, self._SMOOTHING)

    def record_rows(self, rows: int) -> None:
        """Fold in the decoded rows of a request that reached its prediction."""
        self._rows = _folded(self._rows, rows, self._SMOOTHING)


def _folded(average: float, value: float, smoothing: float) -> float:
    """An exponential moving average with ``value`` folded in (the first value as it is)."""
    return value if average <= 0 else average + smoothing * (value - average)


def declared_length(value: str | None) -> int | None:
    """A Content-Length header as a number of bytes (None when absent or not a number)."""
    return int(value) if value is not None and value.isdigit() else None


class RetryAfterHold:
    """Connections told to retry later: a request one of them sends before its Retry-After has
    passed waits out the rest before it is looked at.

    A client that honors Retry-After never notices. One that retries at once (a closed-loop
    load generator, a tight retry loop) would otherwise keep the event loop busy refusing it:
    every refusal is cheap, but hundreds of clients refusing in turn make each turn of the loop
    long, and the batcher, the model's answers and health probes wait behind them. Held
    requests cost one timer each, and a connection sends nothing more while its request waits.
    Keyed by the client's address and port (one TCP connection). Event-loop only.

    Each hold lasts a random share (half to all) of the Retry-After: connections refused in the
    same turn of the loop would otherwise all come back in one later turn, fill the queue at
    once and leave the model idle until the next wave.
    """

    _PRUNE_AT = 4096
    """Entries kept before expired ones are swept (connections that closed while held)."""

    def __init__(self, share: Callable[[], float] | None = None) -> None:
        self._until: dict[tuple[str, int], float] = {}
        self._share = share or (lambda: random.uniform(0.5, 1.0))

    def hold(self, client: tuple[str, int] | None, seconds: float, now: float) -> None:
        """Hold ``client``'s next request until a share of ``seconds`` after ``now``
        (monotonic)."""
        if client is None:
            return
        self._until[client] = now + seconds * self._share()
        if len(self._until) > self._PRUNE_AT:
            self._until = {k: t for k, t in self._until.items() if t > now}

    def wait_s(self, client: tuple[str, int] | None, now: float) -> float:
        """How long ``client``'s request must wait (0 when it is not held); the hold is
        used up by this request."""
        if client is None or not self._until:
            return 0.0
        until = self._until.pop(client, None)
        return 0.0 if until is None else max(0.0, until - now)
