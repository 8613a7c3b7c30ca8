"""Score one whole file in this process, as ``mlserve predict`` does: the same reading and the
same input checker as a batch job, without checkpoints, workers or an output file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from mlserve.batch.readers import ReadPlan, discover_inputs, iter_chunks
from mlserve.batch.scoring import ScoredChunk, ScoringOptions, score_chunk, score_records
from mlserve.errors import DatasetError
from mlserve.inputs import RowChecker, loads_json
from mlserve.runtimes import Runtime

WHOLE_FILE = 1 << 62
"""Chunk size that keeps a whole file in one chunk."""


def score_file(
    path: Path, runtime: Runtime, checker: RowChecker, options: ScoringOptions
) -> ScoredChunk:
    """Every record of a CSV, Parquet, JSON Lines or JSON file, scored or rejected.

    A ``.json`` file holds a list of records, ``{"columns": [...], "data": [...]}``,
    ``{"instances": [...]}``, or one record per line. Raises DatasetError when it cannot be read.
    """
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    if path.suffix.lower() == ".json":
        return score_records(_json_records(path), runtime, checker, options, file=str(path))
    plan = ReadPlan(tuple(checker.names), WHOLE_FILE)
    parts = [
        score_chunk(chunk, runtime, checker, options)
        for chunk in iter_chunks(discover_inputs(str(path)), plan)
    ]
    tables = [p.table for p in parts if p.table is not None]
    return ScoredChunk(
        pa.concat_tables(tables) if tables else None,
        tuple(r for p in parts for r in p.rejects),
    )


def _json_records(path: Path) -> list[dict[str, Any]]:
    text = path.read_bytes()
    try:
        payload = loads_json(text)
    except ValueError:
        payload = None
    if payload is None and text.lstrip().startswith(b"{"):  # one record per line
        try:
            payload = [loads_json(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise DatasetError(f"{path}: cannot read as JSON: {exc}") from None
    if isinstance(payload, dict) and "columns" in payload and "data" in payload:
        columns, data = payload["columns"], payload["data"]
        if not isinstance(columns, list) or not isinstance(data, list):
            raise DatasetError(f"{path}: 'columns' and 'data' must be lists")
        if any(not isinstance(row, list) or len(row) != len(columns) for row in data):
            raise DatasetError(f"{path}: every row of 'data' must hold {len(columns)} values")
        payload = [dict(zip(columns, row, strict=True)) for row in data]
    elif isinstance(payload, dict) and "instances" in payload:
        payload = payload["instances"]
    if not isinstance(payload, list) or not all(isinstance(r, dict) for r in payload):
        raise DatasetError(
            f"{path}: expected a list of records, {{'columns', 'data'}} or {{'instances'}}"
        )
    return payload
