"""Prediction cache: whole responses, per model version, in-process LRU with TTL.

Caching the encoded response (not the prediction) keeps a cached answer byte-identical to a
computed one for every protocol. Entries are keyed by the model version and a hash of exactly
what determined the response: the route, the body and the headers that change its meaning.
Each served version owns its cache, so a new version never answers from an old one's entries.

An entry also keeps what was predicted (the prediction log's item), so every request the cache
answers is logged too, under its own request id.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from cachetools import TTLCache
from prometheus_client import Counter
from starlette.responses import Response

from mlserve.monitoring.predlog import PendingPrediction

Replay = Callable[[PendingPrediction], Awaitable[None]]
"""Logs a cached prediction again for the request a cache hit answers."""

Answer = tuple[Response, PendingPrediction | None]
"""A computed response and what the version predicted for it (its prediction-log item)."""


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
    ) -> None:
        self._entries: TTLCache[bytes, CachedResponse] = TTLCache(
            maxsize=max_bytes, ttl=ttl_s, getsizeof=_entry_size
        )
        self._lock = threading.Lock()  # cachetools caches are not thread-safe
        self._hits = hits
        self._misses = misses
        self._max_bytes = max_bytes
        self.replay = replay

    @staticmethod
    def key(body: bytes, qualifiers: tuple[str | None, ...]) -> bytes:
        """The cache key of a request: its body and what else changes its meaning."""
        digest = hashlib.sha256()
        for qualifier in qualifiers:
            digest.update((qualifier or "").encode() + b"\0")
        digest.update(body)
        return digest.digest()

    def entry(self, key: bytes) -> CachedResponse | None:
        """The cached entry, counted as a hit or a miss."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            self._misses.inc()
            return None
        self._hits.inc()
        return entry

    def get(self, key: bytes) -> Response | None:
        """The cached response, counted as a hit or a miss."""
        entry = self.entry(key)
        return None if entry is None else entry.to_response()

    def put(self, key: bytes, response: Response, logged: PendingPrediction | None = None) -> None:
        """Remember a successful response and what was predicted (too-large ones are skipped)."""
        body = bytes(response.body)
        size = len(body) + 64 + _logged_size(logged, len(body))
        if size > self._max_bytes:
            return
        skipped = {"content-length", "content-type"}
        headers = tuple((k, v) for k, v in response.headers.items() if k not in skipped)
        entry = CachedResponse(
            body, response.media_type or "application/json", headers, logged, size
        )
        with self._lock:
            self._entries[key] = entry


async def respond(
    cache: PredictionCache | None,
    body: bytes,
    qualifiers: tuple[str | None, ...],
    compute: Callable[[], Awaitable[Answer]],
) -> Response:
    """The cached response for this request, or ``compute()``'s, remembered when successful
    with what was predicted, so a hit is logged in the prediction log like the prediction it
    replays."""
    if cache is None:
        response, _logged = await compute()
        return response
    key = cache.key(body, qualifiers)
    entry = cache.entry(key)
    if entry is not None:
        if entry.logged is not None and cache.replay is not None:
            await cache.replay(entry.logged)
        return entry.to_response()
    response, logged = await compute()
    if response.status_code == 200:
        cache.put(key, response, logged)
    return response
