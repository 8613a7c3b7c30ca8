"""Turn a job's parts into OUTPUT and its rejects file, in chunk order.

When the chunks are scored elsewhere (worker processes, Dask), a one-file OUTPUT is written
while the job runs (``OutputAssembler``): as soon as every chunk before a part has finished,
this otherwise idle process appends that part, so encoding OUTPUT overlaps the scoring instead
of following it. Otherwise OUTPUT is made at the end: one file by concatenating the parts,
a folder by moving Parquet parts into ``part-00000.parquet`` files or converting Arrow parts to
``part-00000.csv`` files. Either way memory stays at one part at a time, and OUTPUT appears
(by a rename) only once every chunk is done and the reject rate is within its limit.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mlserve.batch.checkpoint import ChunkReport, JobState, commit, temporary_path
from mlserve.batch.scoring import MODEL_VERSION, PREDICTION, ROW
from mlserve.batch.writers import OutputFormat, OutputTarget, part_schema, read_part
from mlserve.errors import MlserveError


class TableWriter(Protocol):
    """pyarrow's Parquet and CSV writers, as used here."""

    def write_table(self, table: pa.Table) -> None:
        """Append ``table``'s rows."""
        ...

    def close(self) -> None:
        """Finish the file."""
        ...


class OutputAssembler:
    """Builds OUTPUT from the parts of finished chunks, reported in any order.

    With ``stream`` and a one-file OUTPUT, parts are appended in chunk order to a file in the
    state folder (a killed job leaves it there, and the resumed job deletes it), which
    ``finish`` renames over OUTPUT. Without, ``finish`` does all the work: a process that
    scores chunks itself gains nothing by interleaving, and keeping one writer open among the
    scoring's allocations costs a few MiB of fragmentation. Streaming needs one schema for
    every part; when a part's differs (input files, or chunks of one CSV file, disagree on a
    carried column's type) the schema is known only at the end, so the streamed file is dropped
    and ``finish`` assembles OUTPUT from the parts again.
    Use it as a context manager: leaving the block early drops the streamed file.
    """

    def __init__(self, state: JobState, target: OutputTarget, *, stream: bool) -> None:
        self._state, self._target = state, target
        self._finished: dict[int, bool] = {}  # seq -> has a part, for chunks not yet queued
        self._next = 0  # the chunk whose part goes next
        self._stream: _PartStream | None = None
        if stream and not target.is_folder:
            self._stream = _PartStream(temporary_path(state.root / "output"), target.format)

    def __enter__(self) -> OutputAssembler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._stream is not None:
            self._stream.stop(drop=True)

    def add(self, report: ChunkReport) -> None:
        """A chunk finished (now or before a resume); queue every part that is now in order."""
        self._finished[report.seq] = report.has_part
        while self._next in self._finished:
            if self._finished.pop(self._next) and self._stream is not None:
                self._stream.put(self._state.part_path(self._next))
            self._next += 1

    def finish(self, reports: Sequence[ChunkReport], fallback: pa.Schema) -> None:
        """Put OUTPUT in place once every chunk of ``reports`` is done.

        ``fallback`` is the schema of an output without a single scored row.
        """
        # The scoring's Arrow buffers are all freed by now, but the allocator keeps their pages
        # for reuse; handing them back first keeps peak memory that of scoring or assembling,
        # not of both.
        pa.default_memory_pool().release_unused()
        stream = self._stream
        if stream is not None:
            self._stream = None
            complete = stream.stop(drop=False) and self._next == len(reports)
            try:
                if complete and stream.has_rows:
                    self._target.path.parent.mkdir(parents=True, exist_ok=True)
                    commit(stream.path, self._target.path)
                    return
            finally:
                stream.path.unlink(missing_ok=True)
        assemble_output(self._state, self._target, reports, fallback)


class _PartStream:
    """One output file that parts are appended to, in the order they are put."""

    def __init__(self, path: Path, output_format: OutputFormat) -> None:
        self.path = path
        self._format = output_format
        self._writer: TableWriter | None = None
        self._schema: pa.Schema | None = None
        self._diverged = False

    @property
    def has_rows(self) -> bool:
        """True once a part was written."""
        return self._schema is not None

    def put(self, part: Path) -> None:
        """Append ``part``, unless a part with another schema came before it."""
        if self._diverged:
            return
        table = read_part(part)
        if self._writer is None:
            self._schema = table.schema
            self._writer = _open_writer(self.path, table.schema, self._format)
        elif not table.schema.equals(self._schema):
            self._diverged = True
            return
        self._writer.write_table(table)

    def stop(self, *, drop: bool) -> bool:
        """Close the file (deleting it with ``drop``); True when every part was written."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if drop:
            self.path.unlink(missing_ok=True)
        return not self._diverged


def _open_writer(path: Path, schema: pa.Schema, output_format: OutputFormat) -> TableWriter:
    writer: TableWriter
    if output_format == "parquet":
        writer = pq.ParquetWriter(path, schema)
    else:
        writer = pacsv.CSVWriter(path, schema)
    return writer


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
    schemas = [part_schema(p) for p in present]
    schemas += [part_schema(p) for p in moved if p.exists() and target.format == "parquet"]
    schema = unified_schema(schemas)
    wanted = set()
    for seq, source in sources.items():
        destination = destinations[seq]
        wanted.add(destination.name)
        if not source.exists():
            if destination.exists():
                continue  # moved by an earlier, interrupted assembly
            raise MlserveError(f"part {source} of a finished chunk is missing; delete {state.root}")
        if target.format == "parquet" and part_schema(source).equals(schema):
            source.replace(destination)
            continue
        temporary = temporary_path(destination)
        try:
            table = read_part(source).cast(schema)
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
    schema = unified_schema([part_schema(path) for path in parts]) if parts else fallback
    target.path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(target.path)
    try:
        writer = _open_writer(temporary, schema, target.format)
        try:
            for path in parts:
                writer.write_table(read_part(path).cast(schema))
        finally:
            writer.close()
        commit(temporary, target.path)
    finally:
        temporary.unlink(missing_ok=True)


def unified_schema(schemas: Sequence[pa.Schema]) -> pa.Schema:
    """One schema for every part: types widened where they can be, text where they disagree.

    Parts disagree when input files do (a Parquet file's ``id`` is a number, a JSON Lines
    file's text), or chunks of one CSV file do (``batch/column_types.py``: ints in one chunk,
    text in a later one).
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
