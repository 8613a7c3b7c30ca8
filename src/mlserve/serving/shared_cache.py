"""The shared prediction cache: whole responses in Redis, so every replica answers from what any
replica computed (a model's `cache: redis`, with the server's `redis_url`).

The rule is the in-process cache's (`cache.py`): the same request key, whole encoded responses
with what was predicted, so a hit is byte-identical and is logged under its own request id.
What differs is what Redis adds:

- **Keys** name the model, its version and its artifact's sha256 (and mlserve's version and
  the value format), then the request key: a new version, or another registry's version with
  the same number, never gets old answers. Every key is written with its TTL (SET PX).
- **Values** larger than `cache_max_entry_bytes` are not stored; Redis's own `maxmemory` bounds
  the whole. Misses are stored in the background: a response never waits for the write.
- **Faults never fail a request.** Each Redis call is bounded by `redis_timeout_ms`, with no
  retries; a request whose call fails or times out is answered without the cache (counted in
  mlserve_cache_errors_total). After a failure the server leaves Redis alone for a backoff
  (~0.1 s, doubling per failure in a row up to 2 s) and requests go straight to the model,
  counted too; then one request tries Redis again while the others keep going without it. It
  logs that Redis is unavailable at most once per `LOG_INTERVAL_S`, and when it is back.
- Redis I/O runs on the event loop through `redis.asyncio`; models without this cache never
  touch any of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff, NoBackoff
from redis.exceptions import RedisError
from starlette.responses import Response

from mlserve import __version__
from mlserve.monitoring.predlog import PendingPrediction
from mlserve.serving.cache import CachedResponse, Replay, request_key
from mlserve.serving.cache_codec import (
    FORMAT,
    UnreadableEntry,
    UnstorableEntry,
    decode_entry,
    encode_entry,
)

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 2.0
"""After a failure Redis is tried again in ~0.1 s, doubling per failure in a row up to 2 s (each
jittered between half and all of it, so replicas do not retry in step)."""
LOG_INTERVAL_S = 30.0
"""While Redis stays unavailable, one log line per this many seconds (not one per request)."""
MAX_PENDING_STORES = 256
"""Background writes in flight at most; misses beyond it are not stored (Redis is slow)."""
CLOSE_WAIT_S = 1.0
"""How long shutdown waits for background writes before closing the connections."""
FAULTS = (RedisError, OSError, TimeoutError)
"""What a Redis call raises when Redis is down, slow or refusing (not our bugs)."""


class RedisLink:
    """One server process's connections to the shared cache's Redis, and its fault handling:
    bounded calls, backoff after failures, rate-limited logs. Shared by every cached version.

    Use on one event loop; `close` it in the app's shutdown.
    """

    def __init__(
        self, url: str, timeout_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # a failed call is a miss, never a wait
        )
        self._timeout_s = timeout_s
        self._clock = clock
        self.where = _without_credentials(url)
        self._backoff = EqualJitterBackoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S)
        self._failures = 0
        """Failed calls in a row; 0 while Redis answers."""
        self._retry_at = 0.0
        self._probing = False
        self._down_since = 0.0
        self._reported_at = -LOG_INTERVAL_S
        self._is_reported = False
        """Whether the current outage was logged (then its end is logged too)."""
        self._unreported = 0
        """Requests answered without the cache since the last log line."""
        self._pending: set[asyncio.Task[None]] = set()

    async def get(self, key: bytes, errors: Counter) -> bytes | None:
        """The value at ``key``; None when there is none or Redis cannot be asked now (then
        ``errors`` counts the request)."""
        if not self._may_call():
            self._unreported += 1
            errors.inc()
            return None
        try:
            async with asyncio.timeout(self._timeout_s):
                value = await self._client.get(key)
        except FAULTS as exc:
            self._failed(exc)
            errors.inc()
            return None
        finally:
            self._probing = False
        self._succeeded()
        return value if isinstance(value, bytes) else None

    def store(
        self, key: bytes, encode: Callable[[], bytes | None], ttl_ms: int, errors: Counter
    ) -> None:
        """Write ``encode()`` at ``key`` with a TTL, in the background (None: nothing to
        write). Skipped while Redis is unavailable or too many writes are in flight."""
        if self._failures or len(self._pending) >= MAX_PENDING_STORES:
            return
        task = asyncio.create_task(self._set(key, encode, ttl_ms, errors), name="cache-store")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        """Let background writes finish (briefly), then close the connections."""
        if self._pending:
            await asyncio.wait(self._pending, timeout=CLOSE_WAIT_S)
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        await self._client.aclose()

    async def _set(
        self, key: bytes, encode: Callable[[], bytes | None], ttl_ms: int, errors: Counter
    ) -> None:
        value = encode()
        if value is None or not self._may_call():
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._client.set(key, value, px=ttl_ms)
        except FAULTS as exc:
            self._failed(exc)
            errors.inc()
            return
        finally:
            self._probing = False
        self._succeeded()

    def _may_call(self) -> bool:
        """Whether to call Redis now: yes while it answers; after a failure, no until the
        backoff has passed, then yes for one call at a time (the probe)."""
        if not self._failures:
            return True
        if self._probing or self._clock() < self._retry_at:
            return False
        self._probing = True
        return True

    def _failed(self, error: BaseException) -> None:
        """Back off, and log it unless a line went out within the interval."""
        now = self._clock()
        self._failures += 1
        if self._failures == 1:
            self._down_since = now
        self._retry_at = now + self._backoff.compute(self._failures)
        self._unreported += 1
        if now - self._reported_at < LOG_INTERVAL_S:
            return
        log.warning(
            "shared cache unavailable",
            extra={
                "redis": self.where,
                "error": f"{type(error).__name__}: {error}",
                "requests_without_cache": self._unreported,
                "down_s": round(now - self._down_since, 1),
            },
        )
        self._reported_at, self._is_reported, self._unreported = now, True, 0

    def _succeeded(self) -> None:
        if not self._failures:
            return
        self._failures = 0
        if self._is_reported:
            self._is_reported = False
            log.info(
                "shared cache available again",
                extra={"redis": self.where, "down_s": round(self._clock() - self._down_since, 1)},
            )


@dataclass(frozen=True, slots=True)
class CacheCounters:
    """One version's children of the cache metrics."""

    hits: Counter
    misses: Counter
    errors: Counter


@dataclass(frozen=True, slots=True)
class SharedCacheConfig:
    """How a model's entries are kept: for how long, how large at most, without which features."""

    ttl_s: float
    max_entry_bytes: int
    redact: frozenset[str] = frozenset()
    """Features never written anywhere (the prediction log's redaction list)."""


class CachedVersion(NamedTuple):
    """The served version whose responses are cached."""

    model: str
    version: str
    artifact_sha256: str

    def key_prefix(self) -> bytes:
        """What every key of this version starts with."""
        return (
            f"mlserve:{__version__}:f{FORMAT}:{self.model}:{self.version}:"
            f"{self.artifact_sha256[:16]}:"
        ).encode()


class SharedPredictionCache:
    """One served version's view of the shared cache (see the module doc)."""

    def __init__(
        self,
        link: RedisLink,
        version: CachedVersion,
        config: SharedCacheConfig,
        counters: CacheCounters,
        replay: Replay | None = None,
    ) -> None:
        self._link = link
        self._model, self._version = version.model, version.version
        self._prefix = version.key_prefix()
        self._config = config
        self._ttl_ms = max(1, round(config.ttl_s * 1000))
        self._counters = counters
        self.replay = replay

    def key(self, body: bytes, qualifiers: tuple[str | None, ...]) -> bytes:
        """The Redis key of a request to this version."""
        return self._prefix + request_key(body, qualifiers).hex().encode()

    async def lookup(self, key: bytes) -> CachedResponse | None:
        """The entry at ``key``, counted as a hit or a miss; a miss too when Redis cannot be
        asked (counted as an error as well)."""
        entry = self._entry(await self._link.get(key, self._counters.errors))
        if entry is None:
            self._counters.misses.inc()
        else:
            self._counters.hits.inc()
        return entry

    def put(self, key: bytes, response: Response, logged: PendingPrediction | None) -> None:
        """Store the response and what was predicted in the background (the response does not
        wait), unless it is larger than the entry limit."""
        self._link.store(
            key, lambda: self._encoded(response, logged), self._ttl_ms, self._counters.errors
        )

    def _entry(self, raw: bytes | None) -> CachedResponse | None:
        if raw is None:
            return None
        try:
            return decode_entry(raw, self._model, self._version)
        except UnreadableEntry as exc:  # a miss; the answer computed now overwrites it
            log.warning(
                "shared cache entry unreadable",
                extra={"model": self._model, "version": self._version, "error": str(exc)},
            )
            return None

    def _encoded(self, response: Response, logged: PendingPrediction | None) -> bytes | None:
        """The value to store, or None when it is too large or cannot be stored."""
        if len(response.body) > self._config.max_entry_bytes:
            return None
        try:
            value = encode_entry(CachedResponse.of(response, logged), self._config.redact)
        except UnstorableEntry:
            return None
        return value if len(value) <= self._config.max_entry_bytes else None


def _without_credentials(url: str) -> str:
    """``url`` fit for logs: scheme, host, port and database, never a user or password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
