"""Read a whole tabular dataset (CSV, Parquet, JSON or JSON Lines) into a DataFrame."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlserve.errors import DatasetError

SUFFIXES = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".jsonl": "jsonl",
}


def read_dataset(path: Path) -> pd.DataFrame:
    """Read a dataset by its suffix; raises DatasetError naming the file and the problem."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DatasetError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; use CSV, Parquet or JSON"
        )
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        if kind == "csv":
            return pd.read_csv(path)
        if kind == "parquet":
            return pd.read_parquet(path)
        if kind == "jsonl":
            return pd.read_json(path, lines=True)
        return _read_json(path)
    except DatasetError:
        raise
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except Exception as exc:  # parsers raise many types; all mean "cannot read this file"
        raise DatasetError(f"{path}: cannot read as {kind}: {_first_line(exc)}") from None


def _read_json(path: Path) -> pd.DataFrame:
    """A JSON array of records, {"columns": [...], "data": [...]}, or JSON Lines."""
    text = path.read_text(encoding="utf-8").lstrip()
    if text.startswith("{") and "\n{" in text:
        return pd.read_json(path, lines=True)
    if text.startswith("{"):
        import json

        payload = json.loads(text)
        if isinstance(payload, dict) and "columns" in payload and "data" in payload:
            return pd.DataFrame(payload["data"], columns=payload["columns"])
        if isinstance(payload, dict) and "instances" in payload:
            return pd.DataFrame(payload["instances"])
        raise DatasetError(f"{path}: expected a list of records or {{'columns', 'data'}}")
    return pd.read_json(path, orient="records")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
