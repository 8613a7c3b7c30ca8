"""Write a chunk's part, rejects and done-marker; assemble the final output and rejects file.

Parts are Parquet in the state folder while the job runs. At the end they become OUTPUT: moved
into a folder of ``part-00000.parquet`` files (or converted to ``part-00000.csv``), or
concatenated in chunk order into one file written beside OUTPUT and renamed over it. Memory
stays at one part at a time.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mlserve.batch.checkpoint import ChunkReport, JobState, commit, temporary_path, write_atomic
from mlserve.batch.scoring import MODEL_VERSION, PREDICTION, ROW, ScoredChunk
from mlserve.errors import InvalidInput, MlserveError

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


def write_chunk(
    state: JobState, seq: int, scored: ScoredChunk, *, records: int, loaded_by: str, with_id: bool
) -> ChunkReport:
    """Write chunk ``seq``'s part and rejects, then its done-marker (last, so it means done)."""
    if scored.table is not None:
        part = state.part_path(seq)
        temporary = temporary_path(part)
        try:
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
    write_atomic(state.marker_path(seq), json.dumps(report.to_dict()).encode())
    return report


def assemble_output(
    state: JobState, target: OutputTarget, reports: Sequence[ChunkReport], fallback: pa.Schema
) -> None:
    """Turn the parts of ``reports`` (in chunk order) into OUTPUT; safe to repeat after a kill.

    ``fallback`` is the schema of an output without a single scored row.
    """
    with_parts = [r.seq for r in sorted(reports, key=lambda r: r.seq) if r.has_part]
    if target.is_folder:
        _assemble_folder(state, target, with_parts)
    else:
        _assemble_file(state, target, with_parts, fallback)


def _assemble_folder(state: JobState, target: OutputTarget, seqs: list[int]) -> None:
    target.path.mkdir(parents=True, exist_ok=True)
    sources = {seq: state.part_path(seq) for seq in seqs}
    destinations = {seq: target.path / f"part-{seq:05d}.{target.format}" for seq in seqs}
    # Parts an interrupted assembly already moved count too, so every part gets one schema.
    moved = [destinations[s] for s, p in sources.items() if not p.exists()]
    present = [p for p in sources.values() if p.exists()]
    schemas = [pq.read_schema(p) for p in present]
    schemas += [pq.read_schema(p) for p in moved if p.exists() and target.format == "parquet"]
    schema = unified_schema(schemas)
    wanted = set()
    for seq, source in sources.items():
        destination = destinations[seq]
        wanted.add(destination.name)
        if not source.exists():
            if destination.exists():
                continue  # moved by an earlier, interrupted assembly
            raise MlserveError(f"part {source} of a finished chunk is missing; delete {state.root}")
        if target.format == "parquet" and pq.read_schema(source).equals(schema):
            source.replace(destination)
            continue
        temporary = temporary_path(destination)
        try:
            table = pq.read_table(source).cast(schema)
            if target.format == "parquet":
                pq.write_table(table, temporary)
            else:
                pacsv.write_csv(table, temporary)
            commit(temporary, destination)
        finally:
            temporary.unlink(missing_ok=True)
    for stale in target.path.glob("part-*"):  # parts of an older job into the same folder
        if stale.name not in wanted and stale.is_file():
            stale.unlink()


def _assemble_file(
    state: JobState, target: OutputTarget, seqs: list[int], fallback: pa.Schema
) -> None:
    parts = [state.part_path(seq) for seq in seqs]
    schema = unified_schema([pq.read_schema(path) for path in parts]) if parts else fallback
    target.path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(target.path)
    try:
        writer: pq.ParquetWriter | pacsv.CSVWriter
        if target.format == "parquet":
            writer = pq.ParquetWriter(temporary, schema)
        else:
            writer = pacsv.CSVWriter(temporary, schema)
        with writer:
            for path in parts:
                writer.write_table(pq.read_table(path).cast(schema))
        commit(temporary, target.path)
    finally:
        temporary.unlink(missing_ok=True)


def unified_schema(schemas: Sequence[pa.Schema]) -> pa.Schema:
    """One schema for every part: types widened where they can be, text where they disagree.

    Parts disagree when input files do: a CSV file's ``id`` is text, a Parquet file's a number.
    """
    try:
        return pa.unify_schemas(list(schemas), promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    types: dict[str, set[pa.DataType]] = {}
    for schema in schemas:
        for field in schema:
            types.setdefault(field.name, set()).add(field.type)
    fields = []
    for name, kinds in types.items():
        known = {kind for kind in kinds if not pa.types.is_null(kind)}
        try:
            kind = (
                pa.unify_schemas(
                    [pa.schema([(name, k)]) for k in known] or [pa.schema([(name, pa.null())])],
                    promote_options="permissive",
                )
                .field(name)
                .type
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            kind = pa.string()
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


def assemble_rejects(state: JobState, reports: Sequence[ChunkReport], path: Path) -> None:
    """Concatenate every chunk's rejects, in record order, into one JSON Lines file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        with temporary.open("wb") as sink:
            for report in sorted(reports, key=lambda r: r.seq):
                if report.has_rejects:
                    with state.rejects_path(report.seq).open("rb") as source:
                        shutil.copyfileobj(source, sink)
        commit(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def fallback_schema(
    carried: Sequence[str], has_id: bool, proba_columns: Sequence[str]
) -> pa.Schema:
    """The output schema when no row was scored (every carried column as text)."""
    fields = [] if has_id else [pa.field(ROW, pa.int64())]
    fields += [pa.field(name, pa.string()) for name in carried]
    fields.append(pa.field(PREDICTION, pa.string()))
    fields += [pa.field(name, pa.float64()) for name in proba_columns]
    fields.append(pa.field(MODEL_VERSION, pa.string()))
    return pa.schema(fields)
