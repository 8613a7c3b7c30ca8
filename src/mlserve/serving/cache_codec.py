"""Cached responses as bytes for the shared (Redis) cache, and back.

A value holds what the in-process cache keeps in memory: the encoded response (body, media type,
headers) and what was predicted (the prediction log's item), so a replica answering from
another replica's entry still logs the request under its own id. Nothing is pickled: a value
another process wrote is data, never code. It is one msgpack map; arrays go as raw bytes with
their dtype and shape, object arrays as lists. An input frame goes as the matrix the log writer
makes of it (float64 when every column is float, else rows of Python values, in feature order):
that is all a replay is used for, and it decodes in microseconds where a frame takes ~0.5 ms.

Features in the prediction log's redaction list are dropped before an item leaves the process:
Redis is shared, and the log never sees them anyway.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack
import numpy as np
import pandas as pd

from mlserve.monitoring.predlog import PendingPrediction
from mlserve.serving.cache import CachedResponse

FORMAT = 1
"""Bumped when the layout changes; part of every key, so old entries are never read."""
RAW_DTYPE_KINDS = frozenset("biufcUS")
"""Array kinds stored as raw bytes (and the only ones read back from raw bytes)."""


class UnreadableEntry(ValueError):
    """A value that is not an entry this version of mlserve wrote."""


class UnstorableEntry(ValueError):
    """A response or prediction this codec cannot store (it is computed every time instead)."""


def encode_entry(entry: CachedResponse, redact: frozenset[str] = frozenset()) -> bytes:
    """``entry`` as one value, without the features in ``redact``; raises UnstorableEntry."""
    value = {
        "format": FORMAT,
        "body": entry.body,
        "media_type": entry.media_type,
        "headers": [list(pair) for pair in entry.headers],
        "logged": None if entry.logged is None else _encode_item(_redacted(entry.logged, redact)),
    }
    try:
        packed: bytes = msgpack.packb(value, default=_plain)
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. an integer beyond 64 bits
        raise UnstorableEntry(f"cache entry not storable: {exc}") from exc
    return packed


def decode_entry(raw: bytes, model: str, version: str) -> CachedResponse:
    """The entry in ``raw``, its prediction-log item attributed to ``model`` ``version`` (request
    id and time are set when it is replayed); raises UnreadableEntry."""
    try:
        value = msgpack.unpackb(raw)
        if not isinstance(value, dict) or value.get("format") != FORMAT:
            raise UnreadableEntry("not an mlserve cache entry of this format")
        logged = value["logged"]
        return CachedResponse(
            body=bytes(value["body"]),
            media_type=str(value["media_type"]),
            headers=tuple((str(k), str(v)) for k, v in value["headers"]),
            logged=None if logged is None else _decode_item(logged, model, version),
            size_bytes=len(raw),
        )
    except (ValueError, TypeError, KeyError) as exc:
        # msgpack's own errors are ValueErrors too
        raise UnreadableEntry(f"unreadable cache entry: {exc}") from exc


def _redacted(item: PendingPrediction, redact: frozenset[str]) -> PendingPrediction:
    """``item`` without the features in ``redact`` (the same item when it has none of them)."""
    names = list(item.feature_names)
    if redact.isdisjoint(names):
        return item
    keep = [i for i, name in enumerate(names) if name not in redact]
    kept = [names[i] for i in keep]
    inputs = item.inputs
    return dataclasses.replace(
        item,
        inputs=inputs[kept] if isinstance(inputs, pd.DataFrame) else inputs[:, keep],
        feature_names=kept,
        unknown_categories={
            f: rows for f, rows in item.unknown_categories.items() if f not in redact
        },
    )


def _encode_item(item: PendingPrediction) -> dict[str, Any]:
    """What replays ``item`` in another process (its id, time and latency are the replay's)."""
    return {
        "inputs": _encode_array(_matrix(item.inputs, item.feature_names)),
        "feature_names": list(item.feature_names),
        "predictions": _encode_optional(item.predictions),
        "proba": _encode_optional(item.proba),
        "classes": list(item.classes),
        "unknown_categories": {f: list(rows) for f, rows in item.unknown_categories.items()},
        "route": item.route,
    }


def _decode_item(value: Mapping[str, Any], model: str, version: str) -> PendingPrediction:
    return PendingPrediction(
        request_id="",
        ts=0.0,
        model=model,
        version=version,
        inputs=_decode_array(value["inputs"]),
        feature_names=[str(n) for n in value["feature_names"]],
        predictions=_decode_optional(value["predictions"]),
        proba=_decode_optional(value["proba"]),
        classes=[str(c) for c in value["classes"]],
        latency_ms=0.0,
        unknown_categories={
            str(f): [int(r) for r in rows] for f, rows in value["unknown_categories"].items()
        },
        route=str(value["route"]),
    )


def _matrix(batch: np.ndarray | pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """``batch`` as a rows x features matrix in ``names`` order, as the log writer reads it."""
    if not isinstance(batch, pd.DataFrame):
        return batch
    selected = batch[list(names)]
    if all(dtype.kind == "f" for dtype in selected.dtypes):
        return selected.to_numpy(dtype=np.float64)
    return selected.to_numpy(dtype=object)


def _encode_optional(array: np.ndarray | None) -> dict[str, Any] | None:
    return None if array is None else _encode_array(array)


def _decode_optional(value: Mapping[str, Any] | None) -> np.ndarray | None:
    return None if value is None else _decode_array(value)


def _encode_array(array: np.ndarray) -> dict[str, Any]:
    """Numbers, booleans and fixed-width text as raw bytes; anything else (object arrays of
    class labels) as a list."""
    if array.dtype.kind in RAW_DTYPE_KINDS:
        data = np.ascontiguousarray(array).tobytes()
        return {"dtype": array.dtype.str, "shape": list(array.shape), "data": data}
    return {"shape": list(array.shape), "items": array.reshape(-1).tolist()}


def _decode_array(value: Mapping[str, Any]) -> np.ndarray:
    shape = tuple(int(n) for n in value["shape"])
    if "items" in value:
        items = np.empty(len(value["items"]), dtype=object)
        items[:] = value["items"]
        return items.reshape(shape)
    dtype = np.dtype(value["dtype"])
    if dtype.kind not in RAW_DTYPE_KINDS:
        raise UnreadableEntry(f"dtype {dtype.str} is not stored as raw bytes")
    return np.frombuffer(value["data"], dtype=dtype).reshape(shape)


def _plain(value: Any) -> Any:
    """What msgpack cannot pack itself: numpy scalars as Python ones, anything else as text
    (as the prediction log writes it)."""
    if isinstance(value, np.generic):
        return value.item()
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)
