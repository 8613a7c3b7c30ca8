"""Whether the server can read its registry, said once per attempt, and when it reads it next.

The server reads the registry only to follow it; the request path never waits for it. When a
read fails (the database is down or restarting), the loaded models keep serving and readiness
does not change: a readiness probe must not take every replica out of service at once for a
database blip. What does change:

- ``mlserve_registry_up`` turns 0 (1 again after the next read that works);
- each failed attempt logs one ``registry unreachable; serving what is loaded`` line naming
  the database (password hidden), the error in one line and when the next attempt comes: no
  traceback, no storm;
- the next attempt waits the reload interval, doubling per failure up to ``RETRY_MOST_S``, so
  replicas do not hammer a database that is coming back;
- the first read that works logs ``registry reachable again`` with how long it was down, and
  the reload interval applies again: an alias moved meanwhile is followed by that read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import Gauge

from mlserve.errors import RegistryUnavailable

log = logging.getLogger(__name__)

RETRY_MOST_S = 30.0
"""Longest wait between two reads of a registry that cannot be reached (unless the reload
interval itself is longer)."""
_MOST_DOUBLINGS = 30
"""Past this many failures the wait is the cap anyway; bounds the power of two."""


class RegistryHealth:
    """The registry as this server last saw it, and the backoff of its reads.

    Used from the event loop only (the sync that reads the registry reports here).
    """

    def __init__(
        self,
        database: str,
        gauge: Gauge,
        interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``database`` names it in log lines (password hidden); ``interval_s`` is the reload
        interval (0: the registry is read only on SIGHUP, so nothing is scheduled)."""
        self._database = database
        self._gauge = gauge
        self._gauge.set(1)  # up until a read fails: an unset gauge would export 0 from the start
        self._interval_s = interval_s
        self._clock = clock
        self._failures = 0
        self._down_since = 0.0

    @property
    def is_up(self) -> bool:
        """False from a failed read until the next read that works."""
        return self._failures == 0

    def next_read_in_s(self) -> float:
        """Seconds until the next scheduled read: the reload interval while reads work; after
        n failures in a row the interval times 2**(n-1), at most RETRY_MOST_S."""
        if self._failures == 0:
            return self._interval_s
        backoff_s = self._interval_s * 2.0 ** min(self._failures - 1, _MOST_DOUBLINGS)
        return max(self._interval_s, min(backoff_s, RETRY_MOST_S))

    def succeeded(self) -> None:
        """A read worked: say so once if it had failed, and return to the reload interval."""
        self._gauge.set(1)
        if self._failures:
            log.info(
                "registry reachable again",
                extra={
                    "database": self._database,
                    "failed_reads": self._failures,
                    "down_s": round(self._clock() - self._down_since, 1),
                },
            )
        self._failures = 0

    def failed(self, error: BaseException) -> None:
        """A read failed: one log line (with the traceback only when ``error`` is not the
        database failing, i.e. a bug), the gauge to 0, and a longer wait before the next."""
        if self._failures == 0:
            self._down_since = self._clock()
        self._failures += 1
        self._gauge.set(0)
        fields = {
            "database": self._database,
            "error": str(error) if isinstance(error, RegistryUnavailable) else repr(error),
            "failed_reads": self._failures,
            "retry_in_s": self.next_read_in_s() if self._interval_s > 0 else None,
        }
        if isinstance(error, RegistryUnavailable):
            log.warning("registry unreachable; serving what is loaded", extra=fields)
        else:
            log.error("registry read failed; serving what is loaded", extra=fields, exc_info=error)
