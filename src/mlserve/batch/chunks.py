"""What flows from the reader to the workers: numbered chunks of input records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc

RAW_TEXT_LIMIT = 1000
"""Most characters of an unparsable record kept in its reject."""


@dataclass(frozen=True, slots=True)
class Reject:
    """A record that yields no prediction, and why.

    ``row`` numbers every input record from 0 across all input files, like the output's ``row``
    column. ``line`` is 1-based: the line in its file for JSON Lines; for CSV the record's number
    counting the header as 1, which is its line unless a quoted value spans lines; None for
    Parquet.
    """

    row: int
    file: str
    line: int | None
    reason: str
    raw: str | None = None
    id: Any = None

    def to_dict(self, *, with_id: bool) -> dict[str, Any]:
        """A JSON-ready dict; ``id`` is included only when the job has an id column."""
        data: dict[str, Any] = {
            "row": self.row,
            "file": self.file,
            "line": self.line,
            "reason": self.reason,
        }
        if with_id:
            data["id"] = self.id
        if self.raw is not None:
            data["raw"] = self.raw
        return data


@dataclass(frozen=True, slots=True)
class Chunk:
    """Up to ``chunk_rows`` consecutive records of one input file, numbered ``seq`` in the job.

    Chunk boundaries depend only on the input files and ``chunk_rows``, so a resumed job cuts
    the same chunks again. CSV and Parquet records arrive parsed in ``table``; JSON Lines arrive
    as raw ``texts`` that the worker parses, so a bad line becomes a reject off the reading path.
    """

    seq: int
    file: str
    rows: np.ndarray
    """Global record number of each entry of ``table`` (or ``texts``), ascending."""
    table: pa.Table | None = None
    texts: tuple[bytes, ...] | None = None
    lines: np.ndarray | None = None
    """Line number of each entry, where the format has lines."""
    bad: tuple[Reject, ...] = field(default=())
    """Records the reader could not parse (a CSV row with the wrong number of fields)."""
    extra_columns: tuple[str, ...] = ()
    """Columns of the file (CSV, Parquet) the job does not read: neither features nor carried.
    Every record has them, which matters to a model that refuses extra columns."""

    @property
    def records(self) -> int:
        """Input records in this chunk, parsed or not."""
        return len(self.rows) + len(self.bad)

    def __reduce__(self) -> tuple[Any, ...]:
        # Chunks travel to worker processes pickled. Pickling a pyarrow Table copies it buffer
        # by buffer at ~150 MB/s, which made the coordinator the bottleneck of a process pool;
        # as one Arrow IPC stream it is a few memory copies, read back without another.
        table = None if self.table is None else _ipc_bytes(self.table)
        fields = (
            self.seq,
            self.file,
            self.rows,
            table,
            self.texts,
            self.lines,
            self.bad,
            self.extra_columns,
        )
        return (_restore_chunk, fields)


def _ipc_bytes(table: pa.Table) -> pa.Buffer:
    """``table`` as one Arrow IPC stream, in a buffer allocated once at its exact size.

    A growing stream reallocates as it fills, and each fresh allocation faults its pages in:
    sizing first took one chunk's encoding from ~9 to ~6 ms here (46 to 7 ms the first time).
    """
    size = pa.MockOutputStream()
    with pa.ipc.new_stream(size, table.schema) as writer:
        writer.write_table(table)
    buffer = pa.allocate_buffer(size.size())
    with pa.ipc.new_stream(pa.FixedSizeBufferWriter(buffer), table.schema) as writer:
        writer.write_table(table)
    return buffer


def _restore_chunk(
    seq: int,
    file: str,
    rows: np.ndarray,
    table: pa.Buffer | bytes | None,
    texts: tuple[bytes, ...] | None,
    lines: np.ndarray | None,
    bad: tuple[Reject, ...],
    extra_columns: tuple[str, ...],
) -> Chunk:
    """Unpickle a chunk; its table keeps pointing into ``table``'s bytes (no copy)."""
    restored = None if table is None else pa.ipc.open_stream(pa.py_buffer(table)).read_all()
    return Chunk(seq, file, rows, restored, texts, lines, bad, extra_columns)


def clip_text(text: str) -> str:
    """``text`` cut to RAW_TEXT_LIMIT characters, for a reject's ``raw`` field."""
    return text if len(text) <= RAW_TEXT_LIMIT else text[:RAW_TEXT_LIMIT] + "…"
