"""Where OUTPUT goes, and writing (and reading back) a chunk's part, rejects and done-marker.

Parts live in the state folder while the job runs; ``assembly.py`` turns them into OUTPUT.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq

from mlserve.batch.checkpoint import (
    ChunkReport,
    JobState,
    PartFormat,
    commit,
    temporary_path,
    write_atomic,
)
from mlserve.batch.scoring import ScoredChunk
from mlserve.errors import InvalidInput

OutputFormat = Literal["parquet", "csv"]
OUTPUT_SUFFIXES: dict[str, OutputFormat] = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


@dataclass(frozen=True, slots=True)
class OutputTarget:
    """Where the job's rows go: one file, or a folder of part files, in Parquet or CSV."""

    path: Path
    is_folder: bool
    format: OutputFormat

    @classmethod
    def from_path(cls, output: Path, output_format: OutputFormat | None) -> OutputTarget:
        """A path with a .parquet or .csv suffix is one file; anything else is a folder."""
        suffix_format = OUTPUT_SUFFIXES.get(output.suffix.lower())
        if suffix_format is not None and not output.is_dir():
            if output_format is not None and output_format != suffix_format:
                raise InvalidInput(
                    f"{output.name} is not a {output_format} file name; drop --format or rename it"
                )
            return cls(output.absolute(), is_folder=False, format=suffix_format)
        return cls(output.absolute(), is_folder=True, format=output_format or "parquet")

    def describe(self) -> dict[str, str]:
        """JSON-ready identity, for the job manifest."""
        return {"kind": "folder" if self.is_folder else "file", "format": self.format}

    @property
    def part_format(self) -> PartFormat:
        """How chunk parts are stored: as final part files for a Parquet folder, else Arrow."""
        return "parquet" if self.is_folder and self.format == "parquet" else "arrow"


def write_chunk(
    state: JobState, seq: int, scored: ScoredChunk, *, records: int, loaded_by: str, with_id: bool
) -> ChunkReport:
    """Write chunk ``seq``'s part and rejects, then its done-marker (last, so it means done)."""
    if scored.table is not None:
        part = state.part_path(seq)
        temporary = temporary_path(part)
        try:
            if state.parts == "arrow":
                with (
                    pa.OSFile(str(temporary), "wb") as sink,
                    pa.ipc.new_file(sink, scored.table.schema) as writer,
                ):
                    writer.write_table(scored.table)
            else:
                pq.write_table(scored.table, temporary)
            commit(temporary, part)
        finally:
            temporary.unlink(missing_ok=True)
    if scored.rejects:
        lines = b"".join(
            orjson.dumps(r.to_dict(with_id=with_id), default=str) + b"\n" for r in scored.rejects
        )
        write_atomic(state.rejects_path(seq), lines)
    report = ChunkReport(
        seq=seq,
        records=records,
        scored=0 if scored.table is None else scored.table.num_rows,
        rejected=len(scored.rejects),
        has_part=scored.table is not None,
        has_rejects=bool(scored.rejects),
        loaded_by=loaded_by,
    )
    # Not flushed: see checkpoint.py. The part and rejects it vouches for are.
    write_atomic(state.marker_path(seq), json.dumps(report.to_dict()).encode(), flush=False)
    return report


def read_part(path: Path) -> pa.Table:
    """A chunk's part; an Arrow part is memory-mapped, not copied."""
    if path.suffix == ".arrow":
        return pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    return pq.read_table(path)


def part_schema(path: Path) -> pa.Schema:
    """The schema of a chunk's part, or of a part file already moved into OUTPUT."""
    if path.suffix == ".arrow":
        return pa.ipc.open_file(pa.memory_map(str(path))).schema
    return pq.read_schema(path)
