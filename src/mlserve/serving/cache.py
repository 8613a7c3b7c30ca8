"""Prediction cache: whole responses, per model version, in-process LRU with TTL.

Caching the encoded response (not the prediction) keeps a cached answer byte-identical to a
computed one for every protocol. Entries are keyed by the model version and a hash of exactly
what determined the response: the route, the body and the headers that change its meaning.
Each served version owns its cache, so a new version never answers from an old one's entries.

An entry also keeps what was predicted (the prediction log's item), so every request the cache
answers is logged too, under its own request id.

A model's cache is this in-process one (`cache: true`) or the Redis one replicas share
(`cache: redis`, `shared_cache.py`): both key requests with `request_key`, and `respond` is the
one place that answers from an entry (replaying its log item) or computes and keeps the answer.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from cachetools import TTLCache
from prometheus_client import Counter
from starlette.responses import Response

from mlserve.monitoring.predlog import PendingPrediction

Replay = Callable[[PendingPrediction], Awaitable[None]]
"""Logs a cached prediction again for the request a cache hit answers."""

Answer = tuple[Response, PendingPrediction | None]
"""A computed response and what the version predicted for it (its prediction-log item)."""
Compute = Callable[[], Awaitable[Answer]]
"""Computes a request's answer (decode, predict, encode) when no cache has it."""
SKIPPED_HEADERS = frozenset({"content-length", "content-type"})
"""Headers a cached response does not keep: the replayed Response sets them itself."""


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """What is needed to replay a response."""

    body: bytes
    media_type: str
    headers: tuple[tuple[str, str], ...]
    logged: PendingPrediction | None = None
    size_bytes: int = 0

    def to_response(self) -> Response:
        """A fresh Response with the cached body."""
        return Response(self.body, media_type=self.media_type, headers=dict(self.headers))

    @classmethod
    def of(
        cls, response: Response, logged: PendingPrediction | None, size_bytes: int = 0
    ) -> CachedResponse:
        """What replays ``response`` (and logs ``logged`` again) for every cache."""
        headers = tuple((k, v) for k, v in response.headers.items() if k not in SKIPPED_HEADERS)
        media_type = response.media_type or "application/json"
        return cls(bytes(response.body), media_type, headers, logged, size_bytes)


class ResponseCache(Protocol):
    """A served version's cache, in this process or shared: what `respond` needs of it."""

    replay: Replay | None
    """Logs a hit's prediction again (None when there is no prediction log)."""

    def key(self, body: bytes, qualifiers: tuple[str | None, ...]) -> bytes:
        """The key of a request (built on `request_key`)."""
        ...

    async def lookup(self, key: bytes) -> CachedResponse | None:
        """The entry at ``key``, counted as a hit or a miss."""
        ...

    def put(self, key: bytes, response: Response, logged: PendingPrediction | None) -> None:
        """Keep a successful response and what was predicted (too-large ones are not kept)."""
        ...


def request_key(body: bytes, qualifiers: tuple[str | None, ...]) -> bytes:
    """The cache key of a request (a sha256 digest): its body and what else changes its
    meaning (route, content type, binary header length). Every cache keys requests with it."""
    digest = hashlib.sha256()
    for qualifier in qualifiers:
        digest.update((qualifier or "").encode() + b"\0")
    digest.update(body)
    return digest.digest()


def _entry_size(entry: CachedResponse) -> int:
    return entry.size_bytes


def _logged_size(logged: PendingPrediction | None, body_bytes: int) -> int:
    """Bytes the kept prediction holds (a frame's inputs are estimated by the body's size)."""
    if logged is None:
        return 0
    arrays = (logged.inputs, logged.predictions, logged.proba)
    return sum(
        a.nbytes if isinstance(a, np.ndarray) else body_bytes for a in arrays if a is not None
    )


class PredictionCache:
    """A bounded (in bytes), expiring, least-recently-used map of request to response."""

    def __init__(
        self,
        max_bytes: int,
        ttl_s: float,
        hits: Counter,
        misses: Counter,
        replay: Replay | None = None,
        max_entry_bytes: int | None = None,
    ) -> None:
        self._entries: TTLCache[bytes, CachedResponse] = TTLCache(
            maxsize=max_bytes, ttl=ttl_s, getsizeof=_entry_size
        )
        self._lock = threading.Lock()  # cachetools caches are not thread-safe
        self._hits = hits
        self._misses = misses
        self._max_bytes = min(max_bytes, max_entry_bytes or max_bytes)
        self.replay = replay

    key = staticmethod(request_key)

    def entry(self, key: bytes) -> CachedResponse | None:
        """The cached entry, counted as a hit or a miss."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            self._misses.inc()
            return None
        self._hits.inc()
        return entry

    async def lookup(self, key: bytes) -> CachedResponse | None:
        """The cached entry, counted as a hit or a miss (never waits: it is in memory)."""
        return self.entry(key)

    def get(self, key: bytes) -> Response | None:
        """The cached response, counted as a hit or a miss."""
        entry = self.entry(key)
        return None if entry is None else entry.to_response()

    def put(self, key: bytes, response: Response, logged: PendingPrediction | None = None) -> None:
        """Remember a successful response and what was predicted (too-large ones are skipped)."""
        body_bytes = len(response.body)
        size = body_bytes + 64 + _logged_size(logged, body_bytes)
        if size > self._max_bytes:
            return
        entry = CachedResponse.of(response, logged, size)
        with self._lock:
            self._entries[key] = entry


async def respond(
    cache: ResponseCache | None,
    body: bytes,
    qualifiers: tuple[str | None, ...],
    compute: Compute,
) -> Response:
    """The cached response for this request, or ``compute()``'s, kept when successful with
    what was predicted, so a hit is logged in the prediction log like the prediction it
    replays (under its own request id)."""
    if cache is None:
        response, _logged = await compute()
        return response
    key = cache.key(body, qualifiers)
    entry = await cache.lookup(key)
    if entry is not None:
        if entry.logged is not None and cache.replay is not None:
            await cache.replay(entry.logged)
        return entry.to_response()
    response, logged = await compute()
    if response.status_code == 200:
        cache.put(key, response, logged)
    return response
