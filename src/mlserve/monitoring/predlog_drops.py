"""Saying in the log that the prediction log drops records: never silently, never per record.

Under ``when_full: drop`` a full queue (its database down, or slower than the traffic) drops
the records of answered requests and counts them in ``mlserve_prediction_log_dropped_total``.
The log says it too, in a line or two per ``REPORT_INTERVAL_S`` however many requests come:
``prediction log full; dropping records`` when dropping starts, ``prediction log records
dropped`` with the count since the last line while it goes on, and ``prediction log takes
records again`` with the total of the episode at the first record queued once the last line is
an interval old.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 10.0
"""Most one line per this many seconds while records are being dropped."""


class DropReport:
    """The log lines of one writer's dropped records.

    Not thread-safe: called from the request path (the event loop), like ``offer``.
    """

    def __init__(self, queue_rows: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._queue_rows = queue_rows
        self._clock = clock
        self._dropped_rows = 0
        """Rows dropped since the queue last took a record (0: not dropping)."""
        self._unreported_rows = 0
        self._reported_at = 0.0

    @property
    def is_dropping(self) -> bool:
        """True from a dropped record until the queue takes one again."""
        return self._dropped_rows > 0

    def dropped(self, rows: int) -> None:
        """``rows`` were dropped: a line when dropping starts, then one per interval."""
        now = self._clock()
        self._dropped_rows += rows
        self._unreported_rows += rows
        if self._dropped_rows == rows:
            log.warning(
                "prediction log full; dropping records",
                extra={"queue_rows": self._queue_rows, "records": rows},
            )
        elif now - self._reported_at >= REPORT_INTERVAL_S:
            log.warning(
                "prediction log records dropped",
                extra={
                    "records": self._unreported_rows,
                    "since_s": round(now - self._reported_at, 1),
                },
            )
        else:
            return
        self._unreported_rows = 0
        self._reported_at = now

    def took_one(self) -> None:
        """The queue took a record: if it had been dropping, say how many it dropped in all,
        once the last line is an interval old (a queue that is full again a moment later, as
        behind a slow database, would otherwise start and end an episode per batch)."""
        if not self._dropped_rows:
            return
        now = self._clock()
        if now - self._reported_at < REPORT_INTERVAL_S:
            return
        log.warning("prediction log takes records again", extra={"dropped": self._dropped_rows})
        self._dropped_rows = self._unreported_rows = 0
        self._reported_at = now
