"""Score one chunk: check each record against the signature, predict, and build output rows.

Every record yields an output row or a reject, never neither: a wrong type, a missing required
feature, an unparsable line, or a row the model itself refuses (found by bisecting a failed
call) becomes a reject naming the record and the reason.
"""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlserve.batch.chunks import Chunk, Reject, clip_text
from mlserve.runtimes import Batch, Runtime
from mlserve.types import Feature, Signature

PREDICTION = "prediction"
MODEL_VERSION = "model_version"
ROW = "row"
PROBA_PREFIX = "proba_"
RESERVED_COLUMNS = (PREDICTION, MODEL_VERSION, ROW)
"""Output columns a passthrough column may not shadow (nor may it start with ``proba_``)."""

MIN_THREAD_ROWS = 2_000
"""Least rows a scoring thread gets: below, handing rows to a thread costs more than it saves."""

_TRUE = pa.array(["true", "t", "yes", "1", "1.0"])
_FALSE = pa.array(["false", "f", "no", "0", "0.0"])
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class ScoringOptions:
    """What every chunk of a job is scored with, besides the model."""

    model_version: str
    """Written in every output row, as ``name:version``."""
    id_column: str | None = None
    passthrough: tuple[str, ...] = ()
    proba: bool = False

    def input_columns(self, features: list[str]) -> tuple[str, ...]:
        """The input columns a job reads: features, the id column, passthrough columns."""
        wanted = [*features, *([self.id_column] if self.id_column else []), *self.passthrough]
        return tuple(dict.fromkeys(wanted))

    @property
    def carried(self) -> tuple[str, ...]:
        """Input columns copied to the output: the id column, then passthrough columns."""
        ids = (self.id_column,) if self.id_column else ()
        return tuple(dict.fromkeys([*ids, *self.passthrough]))


@dataclass(frozen=True, slots=True)
class ScoredChunk:
    """The output rows of a chunk (None when every record was rejected) and its rejects."""

    table: pa.Table | None
    rejects: tuple[Reject, ...]


def score_chunk(
    chunk: Chunk, runtime: Runtime, options: ScoringOptions, *, threads: int = 1
) -> ScoredChunk:
    """Validate, predict and shape one chunk. Rejects come out in record order.

    With ``threads`` > 1 the rows are predicted in that many consecutive blocks at once, for
    runtimes whose predictions run in parallel (``Runtime.scales_with_threads``); the answers
    are the same, row for row.
    """
    rejects = list(chunk.bad)
    if chunk.texts is not None:
        columns, rows, lines, parse_rejects = _parse_json_lines(
            chunk, options, runtime.signature.inputs
        )
        rejects.extend(parse_rejects)
    else:
        table = chunk.table if chunk.table is not None else pa.table({})
        columns = {name: table.column(name) for name in table.column_names}
        rows, lines = chunk.rows, chunk.lines
    count = len(rows)
    problems = _Problems(count)
    batch = _model_input(runtime.signature, columns, count, problems)
    accepted = problems.clean_positions()
    predictions, probabilities, failed = _predict(
        runtime, _rows_of(batch, accepted), options.proba, threads
    )
    for position, reason in failed.items():
        problems.flag_one(int(accepted[position]), reason)
    if failed:
        accepted = np.delete(accepted, list(failed))
    flagged = problems.flagged()
    ids = _ids(columns, options.id_column, [index for index, _ in flagged])
    for (index, reason), record_id in zip(flagged, ids, strict=True):
        rejects.append(
            Reject(
                row=int(rows[index]),
                file=chunk.file,
                line=int(lines[index]) if lines is not None else None,
                reason=reason,
                id=record_id,
            )
        )
    rejects.sort(key=lambda r: r.row)
    output = _output_table(
        columns, rows, accepted, predictions, probabilities, runtime.classes, options
    )
    return ScoredChunk(output, tuple(rejects))


def _model_input(
    signature: Signature, columns: dict[str, Any], count: int, problems: _Problems
) -> Batch:
    """Every record's features as the model takes them; records that have none are flagged.

    An all-numeric signature gets one float64 matrix in signature order, filled column by
    column (Fortran order, which is also the layout pandas and scikit-learn keep a float frame
    in, so neither copies it again). Categorical features need a frame of Python objects.
    """
    features = signature.inputs
    if signature.is_all_numeric:
        matrix = np.empty((count, len(features)), dtype=np.float64, order="F")
        for index, feature in enumerate(features):
            matrix[:, index] = _convert(feature, columns.get(feature.name), count, problems)
        return matrix
    return pd.DataFrame(
        {f.name: _convert(f, columns.get(f.name), count, problems) for f in features}
    )


def _rows_of(batch: Batch, positions: np.ndarray) -> Batch:
    """The records of ``batch`` at ``positions`` (``batch`` itself when that is all of them)."""
    if len(positions) == len(batch):
        return batch
    if isinstance(batch, pd.DataFrame):
        return batch.iloc[positions].reset_index(drop=True)
    picked: np.ndarray = batch[positions]
    return picked


class _Problems:
    """Why each record of a chunk is rejected; the first reason found wins.

    The per-record reasons are allocated only when some record has a problem, so a clean chunk
    costs one boolean mask here.
    """

    def __init__(self, count: int) -> None:
        self._rejected = np.zeros(count, dtype=bool)
        self._reasons: np.ndarray | None = None

    def flag(self, mask: np.ndarray, reason: str) -> None:
        """Give ``reason`` to every record in ``mask`` that has none yet."""
        new = mask & ~self._rejected
        if not new.any():
            return
        if self._reasons is None:
            self._reasons = np.full(len(self._rejected), None, dtype=object)
        self._reasons[new] = reason
        self._rejected |= new

    def flag_one(self, index: int, reason: str) -> None:
        """Give ``reason`` to one record."""
        mask = np.zeros(len(self._rejected), dtype=bool)
        mask[index] = True
        self.flag(mask, reason)

    def clean_positions(self) -> np.ndarray:
        """Positions of the records without a problem."""
        return np.flatnonzero(~self._rejected)

    def flagged(self) -> list[tuple[int, str]]:
        """(position, reason) of every rejected record, in order."""
        if self._reasons is None:
            return []
        return [(int(i), str(self._reasons[i])) for i in np.flatnonzero(self._rejected)]


def _parse_json_lines(
    chunk: Chunk, options: ScoringOptions, features: tuple[Feature, ...]
) -> tuple[dict[str, pa.Array], np.ndarray, np.ndarray | None, list[Reject]]:
    """Parse each line; features become strings (checked like CSV), carried columns keep types."""
    texts = chunk.texts or ()
    rejects: list[Reject] = []
    records: list[dict[str, Any]] = []
    keep: list[int] = []
    for index, text in enumerate(texts):
        reason = None
        try:
            record = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            reason = f"unparsable JSON: {exc}"
        else:
            if isinstance(record, dict):
                records.append(record)
                keep.append(index)
                continue
            reason = f"expected a JSON object, got {type(record).__name__}"
        line = int(chunk.lines[index]) if chunk.lines is not None else None
        raw = clip_text(text.decode("utf-8", errors="replace"))
        rejects.append(Reject(int(chunk.rows[index]), chunk.file, line, reason, raw))
    names = {f.name for f in features}
    columns: dict[str, pa.Array] = {}
    for name in dict.fromkeys([*(f.name for f in features), *options.carried]):
        cells = [record.get(name) for record in records]
        columns[name] = _as_text(cells) if name in names else _as_array(cells)
    picked = np.asarray(keep, dtype=np.int64)
    lines = chunk.lines[picked] if chunk.lines is not None else None
    return columns, chunk.rows[picked], lines, rejects


def _as_text(cells: list[Any]) -> pa.Array:
    """JSON values as strings (null stays null), so one checker serves CSV and JSON."""
    out: list[str | None] = []
    for cell in cells:
        if cell is None or isinstance(cell, str):
            out.append(cell)
        elif isinstance(cell, bool):
            out.append("true" if cell else "false")
        elif isinstance(cell, int | float):
            out.append(repr(cell) if isinstance(cell, float) else str(cell))
        else:
            out.append(orjson.dumps(cell).decode())
    return pa.array(out, type=pa.string())


def _as_array(cells: list[Any]) -> pa.Array:
    """Carried JSON values with their own type, or as strings when the lines disagree."""
    try:
        return pa.array(cells)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if c is None else str(c) for c in cells], type=pa.string())


def _convert(
    feature: Feature, column: pa.Array | pa.ChunkedArray | None, count: int, problems: _Problems
) -> np.ndarray:
    """Model-ready values of one feature; records that cannot give one are flagged."""
    if column is None:
        column = pa.nulls(count)
    elif isinstance(column, pa.ChunkedArray):
        # combine_chunks copies even a single chunk; most chunks are one piece of one batch
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if feature.kind == "categorical":
        return _categorical(feature, column, problems)
    if feature.kind == "boolean" and _is_text(column.type):
        return _boolean(feature, column, problems)
    return _numeric(feature, column, problems)


def _numeric(feature: Feature, column: pa.Array, problems: _Problems) -> np.ndarray:
    """Numbers as float64 (NaN when missing); text must parse as a number."""
    name, kind = feature.name, column.type
    if pa.types.is_null(kind):
        floats = np.full(len(column), np.nan)
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        floats = _to_numpy(pc.cast(column, pa.float64()))
    elif pa.types.is_decimal(kind):
        floats = _to_numpy(pc.cast(column, pa.float64(), safe=False))
    elif _is_text(kind):
        try:
            floats = _to_numpy(pc.cast(column, pa.float64()))
        except pa.ArrowInvalid:  # some cell is not a number: find which, record by record
            text = column.to_pandas()
            parsed = pd.to_numeric(text.str.strip(), errors="coerce")
            floats = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
            for index in np.flatnonzero(np.isnan(floats) & text.notna().to_numpy()):
                shown = str(text.iloc[index])[:60]
                problems.flag_one(int(index), f"feature {name!r} is not a number: {shown!r}")
    else:
        problems.flag(
            np.ones(len(column), dtype=bool), f"feature {name!r} has unsupported type {kind}"
        )
        return np.full(len(column), np.nan)
    finite = np.isfinite(floats)
    if not finite.all():  # one pass for the usual clean column, two more only when needed
        missing = np.isnan(floats)
        _flag_missing(feature, missing, problems)
        problems.flag(~finite & ~missing, f"feature {name!r} is not finite")
    return floats


def _boolean(feature: Feature, column: pa.Array, problems: _Problems) -> np.ndarray:
    """Booleans written as text (true/false, yes/no, 1/0) as 1.0/0.0, NaN when missing."""
    lowered = pc.utf8_lower(pc.utf8_trim_whitespace(column))
    is_true = _to_numpy(pc.is_in(lowered, value_set=_TRUE)).astype(bool)
    is_false = _to_numpy(pc.is_in(lowered, value_set=_FALSE)).astype(bool)
    missing = _to_numpy(column.is_null()).astype(bool)
    problems.flag(~missing & ~is_true & ~is_false, f"feature {feature.name!r} is not a boolean")
    _flag_missing(feature, missing, problems)
    return np.where(is_true, 1.0, np.where(is_false, 0.0, np.nan))


def _categorical(feature: Feature, column: pa.Array, problems: _Problems) -> np.ndarray:
    """Categories as Python strings (None when missing), as training stored them."""
    try:
        text = column if _is_text(column.type) else pc.cast(column, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        problems.flag(
            np.ones(len(column), dtype=bool),
            f"feature {feature.name!r} has unsupported type {column.type}",
        )
        return np.full(len(column), None, dtype=object)
    _flag_missing(feature, _to_numpy(text.is_null()).astype(bool), problems)
    return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)


def _flag_missing(feature: Feature, missing: np.ndarray, problems: _Problems) -> None:
    """A missing value is fine where training had missing values, a reject elsewhere."""
    if not feature.nullable:
        problems.flag(missing, f"feature {feature.name!r} is missing")


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _to_numpy(array: pa.Array) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False))


def _predict(
    runtime: Runtime, batch: Batch, proba: bool, threads: int = 1
) -> tuple[np.ndarray | None, np.ndarray | None, dict[int, str]]:
    """Predictions for every row the model accepts, and why it refused the others.

    A failed call is split in halves until the rows at fault are alone, so one bad row costs
    about 2 * log2(rows) extra calls instead of failing its whole chunk. With ``threads``, each
    of that many blocks of rows is predicted (and split) on its own thread.
    """
    if not len(batch):
        return None, None, {}
    failed: dict[int, str] = {}
    blocks = _blocks(len(batch), threads)
    if len(blocks) == 1:
        parts = _bisect(runtime, batch, proba, 0, len(batch), failed)
    else:
        pool = _thread_pool(len(blocks))
        per_block: list[dict[int, str]] = [{} for _ in blocks]
        futures = [
            pool.submit(_bisect, runtime, batch, proba, start, stop, block_failed)
            for (start, stop), block_failed in zip(blocks, per_block, strict=True)
        ]
        parts = [part for future in futures for part in future.result()]
        for block_failed in per_block:
            failed.update(block_failed)
    if not parts:
        return None, None, failed
    predictions = np.concatenate([p for p, _ in parts])
    probabilities = np.concatenate([q for _, q in parts if q is not None]) if proba else None
    return predictions, probabilities, failed


def _blocks(rows: int, threads: int) -> list[tuple[int, int]]:
    """``rows`` cut into at most ``threads`` consecutive blocks of MIN_THREAD_ROWS or more."""
    count = max(1, min(threads, rows // MIN_THREAD_ROWS))
    edges = [rows * i // count for i in range(count + 1)]
    return list(itertools.pairwise(edges))


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    """This process's scoring threads, at least ``threads`` of them (see stop_threads)."""
    global _POOL, _POOL_SIZE  # one pool per process, made on first use
    with _POOL_LOCK:
        if _POOL is None or threads > _POOL_SIZE:
            if _POOL is not None:
                _POOL.shutdown(wait=True)
            _POOL, _POOL_SIZE = ThreadPoolExecutor(threads, "mlserve-score"), threads
        return _POOL


def stop_threads() -> None:
    """Stop the scoring threads (a job ends with it: they are not daemon threads)."""
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.shutdown(wait=True)
        _POOL, _POOL_SIZE = None, 0


def _bisect(
    runtime: Runtime,
    batch: Batch,
    proba: bool,
    start: int,
    stop: int,
    failed: dict[int, str],
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Results of rows ``start:stop`` in order, in as few calls as the bad rows allow."""
    part = batch.iloc[start:stop] if isinstance(batch, pd.DataFrame) else batch[start:stop]
    try:
        probabilities: np.ndarray | None = None
        if proba:
            predicted, probabilities = (np.asarray(a) for a in runtime.predict_with_proba(part))
        else:
            predicted = np.asarray(runtime.predict(part))
        if len(predicted) != stop - start:
            raise ValueError(f"model returned {len(predicted)} predictions for {stop - start} rows")
    except Exception as exc:  # the job-runner edge: model code may raise anything on a bad row
        if stop - start == 1:
            message = str(exc).strip().splitlines()
            failed[start] = f"model error: {type(exc).__name__}: {message[0] if message else ''}"
            return []
        middle = (start + stop) // 2
        return [
            *_bisect(runtime, batch, proba, start, middle, failed),
            *_bisect(runtime, batch, proba, middle, stop, failed),
        ]
    return [(predicted, probabilities)]


def _ids(columns: dict[str, Any], id_column: str | None, positions: list[int]) -> list[Any]:
    """The id of each record at ``positions`` (None without an id column)."""
    column = columns.get(id_column) if id_column is not None else None
    if column is None or not positions:
        return [None] * len(positions)
    return list(column.take(pa.array(positions, type=pa.int64())).to_pylist())


def _output_table(
    columns: dict[str, Any],
    rows: np.ndarray,
    accepted: np.ndarray,
    predictions: np.ndarray | None,
    probabilities: np.ndarray | None,
    classes: list[object],
    options: ScoringOptions,
) -> pa.Table | None:
    """Carried columns (or ``row``), ``prediction``, ``proba_<class>``…, ``model_version``."""
    if predictions is None or not len(accepted):
        return None
    every = len(accepted) == len(rows)  # the usual clean chunk: carried columns as they are
    take = None if every else pa.array(accepted)
    out: dict[str, pa.Array | pa.ChunkedArray] = {}
    if options.id_column is None:
        out[ROW] = pa.array(rows if every else rows[accepted], type=pa.int64())
    for name in options.carried:
        column = columns.get(name)
        if column is None:
            out[name] = pa.nulls(len(accepted))
        else:
            out[name] = column if take is None else column.take(take)
    out[PREDICTION] = _prediction_array(predictions)
    if probabilities is not None:
        for index, label in enumerate(classes):
            out[f"{PROBA_PREFIX}{label}"] = pa.array(probabilities[:, index], type=pa.float64())
    out[MODEL_VERSION] = pa.repeat(pa.scalar(options.model_version, pa.string()), len(accepted))
    return pa.table(out)


def _prediction_array(predictions: np.ndarray) -> pa.Array:
    """Predictions as an Arrow array; object arrays (string labels) convert in one call too."""
    try:
        return pa.array(predictions)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed or exotic labels: one by one
        return pa.array([p.item() if isinstance(p, np.generic) else p for p in predictions])
