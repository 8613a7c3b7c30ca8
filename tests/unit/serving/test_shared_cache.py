"""The shared cache's values, keys and settings, without a Redis: what one replica stores is
what another replays, byte for byte, and logs as the same prediction."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from starlette.responses import Response

from mlserve.errors import ConfigError
from mlserve.monitoring.metrics import ServingMetrics
from mlserve.monitoring.predlog import PendingPrediction, to_request
from mlserve.monitoring.predlog_store import LoggedRequest
from mlserve.serving.cache import CachedResponse, request_key
from mlserve.serving.cache_codec import UnreadableEntry, decode_entry, encode_entry
from mlserve.serving.shared_cache import (
    CacheCounters,
    CachedVersion,
    RedisLink,
    SharedCacheConfig,
    SharedPredictionCache,
)
from mlserve.settings import load_settings

QUALIFIERS = ("v2", None)
SHA = "ab" * 32


def item(
    inputs: np.ndarray | pd.DataFrame, names: list[str], **fields: object
) -> PendingPrediction:
    """A prediction-log item as ServedVersion.predict builds it."""
    rows = len(inputs)
    values: dict[str, object] = {
        "request_id": "computed-1",
        "ts": 1_700_000_000.0,
        "model": "churn",
        "version": "3",
        "inputs": inputs,
        "feature_names": names,
        "predictions": np.asarray(["no", "yes", "no"][:rows], dtype=object),
        "proba": np.linspace(0, 1, rows * 2).reshape(rows, 2),
        "classes": ["no", "yes"],
        "latency_ms": 1.5,
        "route": "default",
    }
    values.update(fields)
    return PendingPrediction(**values)  # type: ignore[arg-type]  # test data, checked by use


def entry(logged: PendingPrediction | None) -> CachedResponse:
    """A cached JSON response with a header besides its content type."""
    response = Response(b'{"predictions":["no"]}', media_type="application/json")
    response.headers["inference-header-content-length"] = "22"
    return CachedResponse.of(response, logged)


def logged_row(logged: PendingPrediction, redact: frozenset[str] = frozenset()) -> LoggedRequest:
    """What the prediction log writes for ``logged``, minus what a replay replaces."""
    row = to_request(logged, redact)
    return row._replace(request_id="", ts=0.0, latency_ms=0.0)


def churn_frame() -> pd.DataFrame:
    """Mixed inputs as the input checker hands them over: text with a null, floats with NaN."""
    return pd.DataFrame(
        {
            "plan": pd.Series(["basic", None, "team"], dtype=object),
            "region": ["eu", "us", "apac"],
            "monthly": [10.5, np.nan, 99.0],
            "tenure": np.asarray([1, 30, 59], dtype=np.int64),
        }
    )


def test_an_entry_comes_back_byte_for_byte_and_logs_the_same_prediction() -> None:
    matrix = np.asarray([[5.1, 3.5, 1.4, 0.2], [6.2, np.nan, 4.8, 1.8]])
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    original = entry(item(matrix, names))

    decoded = decode_entry(encode_entry(original), "churn", "3")

    assert decoded.body == original.body
    assert decoded.media_type == original.media_type
    assert decoded.headers == original.headers
    assert decoded.to_response().headers == original.to_response().headers
    assert decoded.logged is not None
    assert original.logged is not None
    assert logged_row(decoded.logged) == logged_row(original.logged)
    np.testing.assert_array_equal(decoded.logged.inputs, matrix)


def test_a_frame_of_mixed_inputs_logs_the_same_row_after_the_round_trip() -> None:
    logged = item(
        churn_frame(),
        ["plan", "region", "monthly", "tenure"],
        unknown_categories={"region": [2]},
        predictions=None,  # only probabilities asked for: the log writes the top class
    )
    decoded = decode_entry(encode_entry(entry(logged)), "churn", "3").logged
    assert decoded is not None
    assert logged_row(decoded) == logged_row(logged)
    assert decoded.unknown_categories == {"region": [2]}
    assert (decoded.model, decoded.version, decoded.route) == ("churn", "3", "default")


def test_a_frame_of_floats_is_logged_as_raw_floats_after_the_round_trip() -> None:
    frame = pd.DataFrame({"x2": [0.5, np.nan], "x1": [1.0, 2.0]})  # not in feature order
    logged = item(frame, ["x1", "x2"])
    decoded = decode_entry(encode_entry(entry(logged)), "churn", "3").logged
    assert decoded is not None
    row = logged_row(decoded)
    assert row == logged_row(logged)
    assert row.inputs_f64 is not None  # the float layout, not JSON text


def test_redacted_features_never_leave_the_process() -> None:
    frame = churn_frame().assign(email=["a@x.io", "b@x.io", "c@x.io"])
    names = ["plan", "region", "monthly", "tenure", "email"]
    logged = item(frame, names, unknown_categories={"email": [0], "plan": [1]})
    redact = frozenset({"email"})

    raw = encode_entry(entry(logged), redact)

    assert b"a@x.io" not in raw
    assert b"email" not in raw
    decoded = decode_entry(raw, "churn", "3").logged
    assert decoded is not None
    assert list(decoded.feature_names) == names[:4]
    assert decoded.unknown_categories == {"plan": [1]}
    # what the log writes is what it would have written for the computed request
    assert logged_row(decoded, redact) == logged_row(logged, redact)


def test_a_redacted_feature_of_a_matrix_is_dropped_by_position() -> None:
    matrix = np.arange(6, dtype=np.float64).reshape(3, 2)
    raw = encode_entry(entry(item(matrix, ["secret", "x"])), frozenset({"secret"}))
    decoded = decode_entry(raw, "churn", "3").logged
    assert decoded is not None
    np.testing.assert_array_equal(decoded.inputs, matrix[:, [1]])
    assert list(decoded.feature_names) == ["x"]


def test_an_entry_without_a_log_item_stays_without_one() -> None:
    assert decode_entry(encode_entry(entry(None)), "churn", "3").logged is None


@pytest.mark.parametrize(
    "raw",
    [
        b"not msgpack \xc1",
        msgpack.packb({"format": 999, "body": b"{}"}),
        msgpack.packb([1, 2, 3]),
        # an object dtype must never be read from raw bytes (it would be pointers)
        msgpack.packb(
            {
                "format": 1,
                "body": b"{}",
                "media_type": "application/json",
                "headers": [],
                "logged": {
                    "inputs": {"dtype": "|O", "shape": [1, 1], "data": b"\0" * 8},
                    "feature_names": ["x"],
                    "predictions": None,
                    "proba": None,
                    "classes": [],
                    "unknown_categories": {},
                    "route": "",
                },
            }
        ),
    ],
)
def test_bytes_that_are_not_an_entry_are_refused(raw: bytes) -> None:
    with pytest.raises(UnreadableEntry):
        decode_entry(raw, "churn", "3")


def test_keys_name_the_version_and_reuse_the_in_process_request_key() -> None:
    body = b'{"inputs": []}'
    version = CachedVersion("churn", "3", SHA)
    prefix = version.key_prefix()
    assert b":churn:3:" in prefix
    assert SHA[:16].encode() in prefix
    metrics = ServingMetrics.create(CollectorRegistry())
    counters = CacheCounters(
        *(
            c.labels("churn", "3")
            for c in (metrics.cache_hits, metrics.cache_misses, metrics.cache_errors)
        )
    )
    # built without a Redis: a link connects on its first call only
    cache = SharedPredictionCache(
        RedisLink("redis://127.0.0.1:1/0", 0.05), version, SharedCacheConfig(60, 4096), counters
    )
    assert cache.key(body, QUALIFIERS) == prefix + request_key(body, QUALIFIERS).hex().encode()
    assert cache.key(body, QUALIFIERS) != cache.key(body, ("v1",))
    others = {
        CachedVersion("churn", "4", SHA).key_prefix(),
        CachedVersion("churn", "3", "cd" * 32).key_prefix(),
        CachedVersion("price", "3", SHA).key_prefix(),
    }
    assert prefix not in others
    assert len(others) == 3


# -- settings ----------------------------------------------------------------------------------


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory with no MLSERVE_* variables in the environment."""
    for key in os.environ:
        if key.upper().startswith("MLSERVE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_model_is_cached_in_redis_from_the_environment(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSERVE_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("MLSERVE_MODELS__CHURN__CACHE", "redis")
    monkeypatch.setenv("MLSERVE_MODELS__IRIS__CACHE", "true")
    settings = load_settings()
    assert settings.options_for("churn").cache == "redis"
    assert settings.options_for("iris").cache is True
    assert not settings.options_for("price").cache


def test_a_model_is_cached_in_redis_from_mlserve_yaml(project_dir: Path) -> None:
    (project_dir / "mlserve.yaml").write_text(
        "redis_url: rediss://cache.internal:6380/2\n"
        "models:\n  churn:\n    cache: redis\n    cache_max_entry_bytes: 4096\n",
        encoding="utf-8",
    )
    settings = load_settings()
    assert settings.options_for("churn").cache == "redis"
    assert settings.options_for("churn").cache_max_entry_bytes == 4096


def test_a_redis_cache_without_a_redis_url_is_one_line_naming_both(project_dir: Path) -> None:
    (project_dir / "mlserve.yaml").write_text(
        "models:\n  churn:\n    cache: redis\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert "models.churn.cache" in message
    assert "MLSERVE_REDIS_URL" in message


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://cache:6379", "redis://"),
        ("cache:6379", "redis://"),
        ("localhost", "redis://"),
        ("redis://cache:63a9/0", "port"),
    ],
)
def test_a_url_redis_cannot_connect_to_is_one_line(project_dir: Path, url: str, said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(redis_url=url)
    message = str(caught.value)
    assert "\n" not in message
    assert "redis_url" in message
    assert said in message


def test_an_unknown_cache_kind_is_refused(project_dir: Path) -> None:
    (project_dir / "mlserve.yaml").write_text(
        "models:\n  churn:\n    cache: memcached\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"models\.churn\.cache"):
        load_settings()
