"""PredictionCache and respond: byte-identical replays, LRU by bytes, TTL, counted hits and misses."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from starlette.responses import Response

from mlserve.monitoring.metrics import ServingMetrics
from mlserve.serving.cache import Answer, PredictionCache, respond
from mlserve.settings import ModelOptions, load_settings

ENTRY_OVERHEAD = 64
"""Bytes the cache charges per entry on top of its body."""


@dataclass
class CacheSetup:
    """A cache counting into a fresh registry."""

    registry: CollectorRegistry

    def cache(self, max_bytes: int = 1 << 20, ttl_s: float = 300.0) -> PredictionCache:
        """A PredictionCache for iris version 1."""
        metrics = ServingMetrics.create(self.registry)
        return PredictionCache(
            max_bytes,
            ttl_s,
            hits=metrics.cache_hits.labels("iris", "1"),
            misses=metrics.cache_misses.labels("iris", "1"),
        )

    def count(self, what: str) -> float:
        """Hits or misses so far."""
        value = self.registry.get_sample_value(
            f"mlserve_cache_{what}_total", {"model": "iris", "version": "1"}
        )
        return value or 0.0


@pytest.fixture
def counted() -> CacheSetup:
    """Cache factory whose hit and miss counters live on a fresh CollectorRegistry."""
    return CacheSetup(CollectorRegistry())


def answer(body: bytes, **headers: str) -> Response:
    """A computed JSON response."""
    return Response(body, media_type="application/json", headers=headers)


def key(body: bytes) -> bytes:
    """The key of a v2 JSON request with this body."""
    return PredictionCache.key(body, ("v2", None))


def test_a_hit_replays_the_computed_response_byte_for_byte(counted: CacheSetup) -> None:
    cache = counted.cache()
    computed = Response(
        b'{"outputs":[]}\x00\x01binary',
        media_type="application/octet-stream",
        headers={"inference-header-content-length": "14"},
    )
    assert cache.get(key(b"request")) is None
    cache.put(key(b"request"), computed)
    cached = cache.get(key(b"request"))
    assert cached is not None
    assert cached.body == computed.body
    assert cached.media_type == computed.media_type
    assert cached.headers["inference-header-content-length"] == "14"
    assert cached.headers["content-length"] == str(len(computed.body))
    assert (counted.count("hits"), counted.count("misses")) == (1, 1)


def test_respond_computes_once_per_distinct_request(counted: CacheSetup) -> None:
    cache = counted.cache()
    computed: list[bytes] = []

    def compute_for(body: bytes) -> Response:
        computed.append(body)
        return answer(b'{"predictions":[%d]}' % len(computed))

    async def send(body: bytes) -> bytes:
        response = await respond(cache, body, ("v1",), lambda: _async((compute_for(body), None)))
        return bytes(response.body)

    async def scenario() -> list[bytes]:
        return [await send(body) for body in (b"a", b"a", b"b", b"a")]

    bodies = asyncio.run(scenario())
    assert computed == [b"a", b"b"]
    first, second = b'{"predictions":[1]}', b'{"predictions":[2]}'
    assert bodies == [first, first, second, first]
    assert (counted.count("hits"), counted.count("misses")) == (2, 2)


def test_respond_never_caches_errors(counted: CacheSetup) -> None:
    cache = counted.cache()
    calls = 0

    async def failing() -> Answer:
        nonlocal calls
        calls += 1
        return Response(b'{"error":"overloaded"}', status_code=503), None

    async def scenario() -> list[int]:
        return [(await respond(cache, b"x", ("v1",), failing)).status_code for _ in range(2)]

    assert asyncio.run(scenario()) == [503, 503]
    assert calls == 2
    assert counted.count("hits") == 0


def test_without_a_cache_every_request_is_computed(counted: CacheSetup) -> None:
    counted.cache()  # registers the counters, which must stay untouched
    calls = 0

    async def compute() -> Answer:
        nonlocal calls
        calls += 1
        return answer(b"{}"), None

    async def scenario() -> None:
        for _ in range(3):
            await respond(None, b"same", ("v1",), compute)

    asyncio.run(scenario())
    assert calls == 3
    assert (counted.count("hits"), counted.count("misses")) == (0, 0)


def test_least_recently_used_entries_go_first_when_bytes_run_out(counted: CacheSetup) -> None:
    body = b"x" * 100
    cache = counted.cache(max_bytes=3 * (len(body) + ENTRY_OVERHEAD))
    for name in (b"a", b"b", b"c"):
        cache.put(key(name), answer(body))
    assert cache.get(key(b"a")) is not None  # a is now more recent than b
    cache.put(key(b"d"), answer(body))
    assert cache.get(key(b"b")) is None
    for name in (b"a", b"c", b"d"):
        assert cache.get(key(name)) is not None, name


def test_a_larger_entry_evicts_as_many_as_its_bytes_need(counted: CacheSetup) -> None:
    small = b"x" * 100
    cache = counted.cache(max_bytes=4 * (len(small) + ENTRY_OVERHEAD))
    for name in (b"a", b"b", b"c", b"d"):
        cache.put(key(name), answer(small))
    cache.put(key(b"big"), answer(b"y" * (2 * len(small) + ENTRY_OVERHEAD)))
    assert [cache.get(key(n)) is not None for n in (b"a", b"b", b"c", b"d", b"big")] == [
        False,
        False,
        True,
        True,
        True,
    ]


def test_a_response_larger_than_the_budget_is_not_cached_and_evicts_nothing(
    counted: CacheSetup,
) -> None:
    cache = counted.cache(max_bytes=2048)
    cache.put(key(b"kept"), answer(b"{}"))
    cache.put(key(b"huge"), answer(b"z" * 4096))
    assert cache.get(key(b"huge")) is None
    assert cache.get(key(b"kept")) is not None


def test_entries_expire_after_their_ttl(counted: CacheSetup) -> None:
    cache = counted.cache(ttl_s=0.05)
    cache.put(key(b"a"), answer(b"{}"))
    assert cache.get(key(b"a")) is not None
    time.sleep(0.15)
    assert cache.get(key(b"a")) is None
    assert (counted.count("hits"), counted.count("misses")) == (1, 1)


def test_keys_tell_apart_routes_headers_and_bodies() -> None:
    body = b'{"inputs":[]}'
    keys = {
        PredictionCache.key(body, ("v2", None)),
        PredictionCache.key(body, ("v2", "13")),
        PredictionCache.key(body, ("v1",)),
        PredictionCache.key(body, ("mlflow", "application/json")),
        PredictionCache.key(body, ("mlflow", "text/csv")),
        PredictionCache.key(body + b" ", ("v2", None)),
    }
    assert len(keys) == 6
    assert PredictionCache.key(body, ("v2", None)) == PredictionCache.key(body, ("v2", None))
    # qualifiers are separated, so shifting characters between them changes the key
    assert PredictionCache.key(b"", ("ab", "c")) != PredictionCache.key(b"", ("a", "bc"))
    assert PredictionCache.key(b"c", ("ab",)) != PredictionCache.key(b"", ("ab", "c"))


# -- switched on per model -----------------------------------------------------------------------


def test_cache_is_off_unless_a_model_asks_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings().options_for("iris") == ModelOptions()
    assert not ModelOptions().cache


def test_cache_is_switched_on_per_model_in_mlserve_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlserve.yaml").write_text(
        "models:\n  iris:\n    cache: true\n    cache_ttl_s: 5\n", encoding="utf-8"
    )
    settings = load_settings()
    assert settings.options_for("iris").cache
    assert settings.options_for("iris").cache_ttl_s == 5
    assert not settings.options_for("churn").cache


def test_cache_is_switched_on_per_model_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLSERVE_MODELS__IRIS__CACHE", "true")
    settings = load_settings()
    assert settings.options_for("iris").cache
    assert not settings.options_for("churn").cache


async def _async(response: Response) -> Response:
    return response
