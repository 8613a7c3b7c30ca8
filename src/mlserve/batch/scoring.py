"""Score one chunk: check each record with the model's input checker, predict, and build
output rows.

Every record yields an output row or a reject, never neither: a row the input checker
(``mlserve.inputs``, the same one every serving protocol uses) refuses, an unparsable line, or
a row the model itself refuses (found by bisecting a failed call) becomes a reject naming the
record and the reason.
"""

from __future__ import annotations

import functools
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from mlserve.batch.chunks import Chunk, Reject, clip_text
from mlserve.inputs import (
    CheckedRows,
    InputPolicy,
    RowChecker,
    loads_json,
    predict_around_refusals,
)
from mlserve.runtimes import Batch, Runtime

PREDICTION = "prediction"
MODEL_VERSION = "model_version"
ROW = "row"
PROBA_PREFIX = "proba_"
RESERVED_COLUMNS = (PREDICTION, MODEL_VERSION, ROW)
"""Output columns a passthrough column may not shadow (nor may it start with ``proba_``)."""

MIN_THREAD_ROWS = 2_000
"""Least rows a scoring thread gets: below, handing rows to a thread costs more than it saves."""

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
    policy: InputPolicy = field(default_factory=InputPolicy)
    """The model's input rules (missing values, unknown categories, extra columns)."""

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
    chunk: Chunk,
    runtime: Runtime,
    checker: RowChecker,
    options: ScoringOptions,
    *,
    threads: int = 1,
) -> ScoredChunk:
    """Check, predict and shape one chunk. Rejects come out in record order.

    With ``threads`` > 1 the rows are predicted in that many consecutive blocks at once, for
    runtimes whose predictions run in parallel (``Runtime.scales_with_threads``); the answers
    are the same, row for row.
    """
    if chunk.texts is not None:
        records, rows, lines, parse_rejects = _parse_json_lines(chunk)
        scored = score_records(
            records,
            runtime,
            checker,
            options,
            rows=rows,
            lines=lines,
            file=chunk.file,
            threads=threads,
        )
        rejects = sorted([*chunk.bad, *parse_rejects, *scored.rejects], key=lambda r: r.row)
        return ScoredChunk(scored.table, tuple(rejects))
    table = chunk.table if chunk.table is not None else pa.table({})
    columns = {name: table.column(name) for name in table.column_names}
    checked = checker.check_columns(
        columns, len(chunk.rows), extra=chunk.extra_columns, allowed=options.carried
    )
    return _score(checked, columns, chunk, runtime, options, threads)


def score_records(
    records: list[dict[str, Any]],
    runtime: Runtime,
    checker: RowChecker,
    options: ScoringOptions,
    *,
    rows: np.ndarray | None = None,
    lines: np.ndarray | None = None,
    file: str = "",
    threads: int = 1,
) -> ScoredChunk:
    """Check, predict and shape parsed JSON records (``rows`` numbers them; default 0, 1, …;
    ``lines`` are their lines in ``file``)."""
    numbers = np.arange(len(records), dtype=np.int64) if rows is None else rows
    columns: dict[str, Any] = {
        name: _as_array([r.get(name) for r in records]) for name in options.carried
    }
    checked = checker.check_records(records, allowed=options.carried)
    chunk = Chunk(seq=0, file=file, rows=numbers, lines=lines)
    return _score(checked, columns, chunk, runtime, options, threads)


def _score(
    checked: CheckedRows,
    columns: dict[str, Any],
    chunk: Chunk,
    runtime: Runtime,
    options: ScoringOptions,
    threads: int,
) -> ScoredChunk:
    """Predict the accepted rows and build the output table and the rejects."""
    rows, lines = chunk.rows, chunk.lines
    accepted = checked.accepted_positions()
    predictions, probabilities, failed = _predict(
        runtime, checked.accepted_batch(), options.proba, threads
    )
    reasons = dict(checked.reasons)
    for position, reason in failed.items():
        reasons[int(accepted[position])] = reason
    if failed:
        accepted = np.delete(accepted, list(failed))
    flagged = sorted(reasons.items())
    ids = _ids(columns, options.id_column, [index for index, _ in flagged])
    rejects = list(chunk.bad)
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


def _parse_json_lines(
    chunk: Chunk,
) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray | None, list[Reject]]:
    """Each line as a record (NaN and Infinity tokens read as numbers, as serving reads them);
    a line that is no JSON object is a reject."""
    texts = chunk.texts or ()
    rejects: list[Reject] = []
    records: list[dict[str, Any]] = []
    keep: list[int] = []
    for index, text in enumerate(texts):
        reason = None
        try:
            record = loads_json(text)
        except ValueError as exc:
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
    picked = np.asarray(keep, dtype=np.int64)
    lines = chunk.lines[picked] if chunk.lines is not None else None
    return records, chunk.rows[picked], lines, rejects


def _as_array(cells: list[Any]) -> pa.Array:
    """Carried JSON values with their own type, or as strings when the lines disagree."""
    try:
        return pa.array(cells)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if c is None else str(c) for c in cells], type=pa.string())


def _predict(
    runtime: Runtime, batch: Batch, proba: bool, threads: int = 1
) -> tuple[np.ndarray | None, np.ndarray | None, dict[int, str]]:
    """Predictions for every row the model accepts, and why it refused the others.

    A failed call is split in halves until the rows at fault are alone
    (``predict_around_refusals``), so one bad row costs about 2 * log2(rows) extra calls
    instead of failing its whole chunk. With ``threads``, each of that many blocks of rows is
    predicted (and split) on its own thread.
    """
    if not len(batch):
        return None, None, {}
    call = functools.partial(_predict_rows, runtime, proba)
    # Exception: the job-runner edge, where model code may raise anything on a bad row.
    blocks = _blocks(len(batch), threads)
    if len(blocks) == 1:
        searches = [predict_around_refusals(call, batch, Exception)]
    else:
        pool = _thread_pool(len(blocks))
        futures = [
            pool.submit(predict_around_refusals, call, batch, Exception, span=block)
            for block in blocks
        ]
        searches = [future.result() for future in futures]
    parts = [part for found, _ in searches for part in found]
    failed = {row: reason for _, refused in searches for row, reason in refused.items()}
    if not parts:
        return None, None, failed
    predictions = np.concatenate([p for p, _ in parts])
    probabilities = np.concatenate([q for _, q in parts if q is not None]) if proba else None
    return predictions, probabilities, failed


def _predict_rows(
    runtime: Runtime, proba: bool, rows: Batch
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions (and probabilities) of ``rows``; ValueError when the model's answer does not
    have one prediction per row."""
    probabilities: np.ndarray | None = None
    if proba:
        predicted, probabilities = (np.asarray(a) for a in runtime.predict_with_proba(rows))
    else:
        predicted = np.asarray(runtime.predict(rows))
    if len(predicted) != len(rows):
        raise ValueError(f"model returned {len(predicted)} predictions for {len(rows)} rows")
    return predicted, probabilities


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
