"""Prediction cache: whole responses, per model version, in-process LRU with TTL.

Caching the encoded response (not the prediction) keeps a cached answer byte-identical to a
computed one for every protocol. Entries are keyed by the model version and a hash of exactly
what determined the response: the route, the body and the headers that change its meaning.
Each served version owns its cache, so a new version never answers from an old one's entries.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cachetools import TTLCache
from prometheus_client import Counter
from starlette.responses import Response


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """What is needed to replay a response."""

    body: bytes
    media_type: str
    headers: tuple[tuple[str, str], ...]

    def to_response(self) -> Response:
        """A fresh Response with the cached body."""
        return Response(self.body, media_type=self.media_type, headers=dict(self.headers))


def _entry_size(entry: CachedResponse) -> int:
    return len(entry.body) + 64


class PredictionCache:
    """A bounded (in bytes), expiring, least-recently-used map of request to response."""

    def __init__(self, max_bytes: int, ttl_s: float, hits: Counter, misses: Counter) -> None:
        self._entries: TTLCache[bytes, CachedResponse] = TTLCache(
            maxsize=max_bytes, ttl=ttl_s, getsizeof=_entry_size
        )
        self._lock = threading.Lock()  # cachetools caches are not thread-safe
        self._hits = hits
        self._misses = misses
        self._max_bytes = max_bytes

    @staticmethod
    def key(body: bytes, qualifiers: tuple[str | None, ...]) -> bytes:
        """The cache key of a request: its body and what else changes its meaning."""
        digest = hashlib.sha256()
        for qualifier in qualifiers:
            digest.update((qualifier or "").encode() + b"\0")
        digest.update(body)
        return digest.digest()

    def get(self, key: bytes) -> Response | None:
        """The cached response, counted as a hit or a miss."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            self._misses.inc()
            return None
        self._hits.inc()
        return entry.to_response()

    def put(self, key: bytes, response: Response) -> None:
        """Remember a successful response (too-large ones are skipped)."""
        body = bytes(response.body)
        if len(body) + 64 > self._max_bytes:
            return
        skipped = {"content-length", "content-type"}
        headers = tuple((k, v) for k, v in response.headers.items() if k not in skipped)
        entry = CachedResponse(body, response.media_type or "application/json", headers)
        with self._lock:
            self._entries[key] = entry


async def respond(
    cache: PredictionCache | None,
    body: bytes,
    qualifiers: tuple[str | None, ...],
    compute: Callable[[], Awaitable[Response]],
) -> Response:
    """The cached response for this request, or ``compute()``'s, remembered when successful."""
    if cache is None:
        return await compute()
    key = cache.key(body, qualifiers)
    cached = cache.get(key)
    if cached is not None:
        return cached
    response = await compute()
    if response.status_code == 200:
        cache.put(key, response)
    return response
