"""Adaptive micro-batching: concurrent requests for one model share one predict call.

Batching costs nothing at low load: when no predict is running, a lone request runs at once.
Requests that arrive while one runs form the next batch, which waits at most ``max_wait_ms``
(counted from its oldest request) only until ``max_batch_size`` rows are queued. Whatever is
queued when a batch starts is stacked up to ``max_batch_rows``: waiting is what costs latency,
stacking rows that are already here costs nothing, and requests of many rows (larger than
``max_batch_size`` on their own) still share predict calls. The queue is bounded: when full, a request
is refused at once (503 with Retry-After) rather than timing out later; a request whose
deadline passes while queued is dropped without being computed (504).

Refusing is decided before a request's body is read, too (``refuse_if_full`` with an estimate of
its rows, see ``serving/admission.py``), so a rejection costs no decoding; ``predict`` applies
the same rule to the rows actually decoded, and its word is final.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlserve.errors import DeadlineExceeded, Overloaded
from mlserve.runtimes import Batch

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]
Compute = Callable[[Batch, tuple[str, ...]], Awaitable[Outputs]]
"""Runs the model (off the event loop) for stacked rows and the union of requested outputs."""


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    """Limits of one model's batcher."""

    max_batch_size: int = 64
    """Rows a batch waits (at most max_wait_ms) to collect."""
    max_wait_ms: float = 2.0
    max_batch_rows: int = 1024
    """Most rows stacked into one predict call from requests already queued (at least
    max_batch_size; a single larger request still runs, on its own)."""
    max_queue_rows: int = 4096
    max_queue_requests: int = 256
    """Most requests queued, whatever their rows: each costs the event loop its decoding and
    answer, so a queue of many small requests is as slow to clear as one of many rows."""
    timeout_s: float = 30.0


@dataclass(slots=True)
class _Pending:
    batch: Batch
    rows: int
    outputs: tuple[str, ...]
    future: asyncio.Future[Outputs]
    enqueued: float
    deadline: float
    kind: tuple[object, ...] = field(default=())
    started: bool = False
    """Taken into a predict call: its deadline no longer applies."""


@dataclass(slots=True)
class BatchStats:
    """What the batcher reports after each batch, for metrics."""

    queue_depth: int = 0
    rejected: int = 0
    expired: int = 0


class MicroBatcher:
    """Stacks concurrent requests of one model version into single predict calls, FIFO.

    Results never cross requests: each request gets its own row range of each output it asked
    for, and a batch that fails is retried request by request so one bad request cannot fail
    its neighbours. Create and use it on one event loop.
    """

    def __init__(
        self,
        compute: Compute,
        config: BatchingConfig,
        on_batch: Callable[[int, list[float]], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self._compute = compute
        self._config = config
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._on_batch = on_batch or (lambda _size, _waits: None)
        self._on_depth = on_depth or (lambda _depth: None)
        self.stats = BatchStats()

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a predict call."""
        return self._queued_rows

    def refuse_if_full(self, rows: int) -> None:
        """Raise Overloaded when ``rows`` more rows, or one more request, would overflow the
        queue; a request of any size is taken when nothing is queued. Cheap: callers use it
        before decoding a body."""
        if not self._queue:
            return
        config = self._config
        if self._queued_rows + rows > config.max_queue_rows:
            held = f"{self._queued_rows} rows (limit {config.max_queue_rows})"
        elif len(self._queue) >= config.max_queue_requests:
            held = f"{len(self._queue)} requests (limit {config.max_queue_requests})"
        else:
            return
        self.stats.rejected += 1
        raise Overloaded(f"the queue holds {held}; retry shortly", retry_after_s=1.0)

    async def predict(self, batch: Batch, outputs: tuple[str, ...]) -> Outputs:
        """Outputs for ``batch``; raises Overloaded when the queue is full, DeadlineExceeded when
        the deadline passes before its predict call starts (a started call is waited for)."""
        rows = len(batch)
        self.refuse_if_full(rows)
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        pending = _Pending(
            batch=batch,
            rows=rows,
            outputs=outputs,
            future=loop.create_future(),
            enqueued=now,
            deadline=now + self._config.timeout_s,
            kind=input_kind(batch),
        )
        self._queue.append(pending)
        self._queued_rows += rows
        self._on_depth(self._queued_rows)
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain(), name="micro-batcher")
        # One timer per request (not wait_for + shield: three futures and a task fewer). If
        # the caller goes away, awaiting the future directly cancels it, so it is dropped from
        # the queue instead of computed for nobody.
        timer = loop.call_later(self._config.timeout_s, self._expire, pending)
        try:
            return await pending.future
        finally:
            timer.cancel()

    def _expire(self, pending: _Pending) -> None:
        """The deadline passed: fail the request unless its predict call already started."""
        if pending.started or pending.future.done():
            return  # a started call is waited for: answering 504 now would waste it
        self.stats.expired += 1
        pending.future.set_exception(
            DeadlineExceeded(
                f"the request waited {self._config.timeout_s:g} s without being answered"
            )
        )

    async def close(self, *, drain: bool = False) -> None:
        """Stop the worker task at once (pending requests are failed by their deadlines), or
        with ``drain`` once every queued request has been answered."""
        if drain:
            while self._worker is not None and not self._worker.done():
                await asyncio.gather(asyncio.shield(self._worker), return_exceptions=True)
            return
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def _drain(self) -> None:
        """Run batches until the queue is empty; the first one starts at once."""
        first = True
        while self._queue:
            if not first:
                await self._fill()
            first = False
            group = self._take()
            if group:
                await self._run(group)

    async def _fill(self) -> None:
        """Wait (at most max_wait_ms from the oldest request) for the next batch to fill."""
        limit_s = self._config.max_wait_ms / 1000
        while self._queue and self._queued_rows < self._config.max_batch_size:
            remaining = self._queue[0].enqueued + limit_s - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Pending]:
        """The next batch: FIFO, same input kind, at most max_batch_rows rows (or one request)."""
        group: list[_Pending] = []
        rows = 0
        cap = max(self._config.max_batch_rows, self._config.max_batch_size)
        now = time.monotonic()
        while self._queue:
            head = self._queue[0]
            if head.future.done() or head.deadline <= now:
                self._queue.popleft()
                self._queued_rows -= head.rows
                self._expire(head)  # its timer may not have fired yet
                continue
            if group and (head.kind != group[0].kind or rows + head.rows > cap):
                break
            self._queue.popleft()
            self._queued_rows -= head.rows
            head.started = True
            group.append(head)
            rows += head.rows
        self._on_depth(self._queued_rows)
        return group

    async def _run(self, group: list[_Pending]) -> None:
        started = time.monotonic()
        waits = [started - p.enqueued for p in group]
        outputs = tuple(sorted({o for p in group for o in p.outputs}))
        try:
            if len(group) == 1:
                results = await self._compute(group[0].batch, outputs)
                _resolve(group[0], results, 0)
            else:
                results = await self._compute(stack([p.batch for p in group]), outputs)
                offset = 0
                for pending in group:
                    _resolve(pending, results, offset)
                    offset += pending.rows
        except asyncio.CancelledError:
            for pending in group:
                if not pending.future.done():
                    pending.future.cancel()
            raise
        except Exception as exc:
            if len(group) == 1:
                if not group[0].future.done():
                    group[0].future.set_exception(exc)
            else:
                # One request's rows may have failed the whole batch: retry each on its own.
                for pending in group:
                    await self._run([pending])
                return
        self._on_batch(sum(p.rows for p in group), waits)


def _resolve(pending: _Pending, results: Outputs, offset: int) -> None:
    if pending.future.done():
        return
    end = offset + pending.rows
    pending.future.set_result({name: results[name][offset:end] for name in pending.outputs})


def input_kind(batch: Batch) -> tuple[object, ...]:
    """Requests stack only with requests of the same shape of input."""
    if isinstance(batch, pd.DataFrame):
        return ("frame", tuple(batch.columns), tuple(str(t) for t in batch.dtypes))
    return ("array", batch.shape[1:], batch.dtype.str)


def stack(batches: Sequence[Batch]) -> Batch:
    """Batches of one input kind (``input_kind``) as one."""
    frames = [b for b in batches if isinstance(b, pd.DataFrame)]
    if frames:
        return pd.concat(frames, ignore_index=True)
    return np.concatenate([b for b in batches if isinstance(b, np.ndarray)])
