"""Find a job's input files and stream them as numbered chunks, with bounded memory.

INPUT is a file, a folder of files, or a glob, on any fsspec filesystem. CSV and Parquet are
streamed by pyarrow (CSV as text, then the plan's typed columns get a type per chunk); JSON
Lines line by line (the worker parses each line, so a broken one becomes a reject). Chunks
never span files, and their boundaries depend only on the files and ``chunk_rows``: a resumed
job cuts exactly the same chunks.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from mlserve.batch.chunks import Chunk, Reject, clip_text
from mlserve.batch.column_types import with_inferred_types
from mlserve.errors import DatasetError, InvalidInput
from mlserve.inputs import check_header, text_convert_options

FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
"""File suffix -> input format; CSV and JSON Lines may add a compression suffix (.gz, .zst…).

Not ``.json``: a JSON array is not streamable line by line, and guessing would turn a whole
file into rejects."""

COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".lz4")
SAMPLE_BYTES = 1 << 20
"""Bytes hashed from the start and from the end of each file for its fingerprint."""
CSV_BLOCK_BYTES = 1 << 18
"""CSV read size; pyarrow reads dozens of blocks ahead, so this bounds that buffer too."""
_GLOB_CHARS = "*?["


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file and what identifies its content."""

    path: str
    """Path on its filesystem (no protocol), used to open it."""
    url: str
    """What reports and rejects call it: the local path, or the URL with its protocol."""
    format: str
    size_bytes: int
    modified: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready identity, for the job manifest."""
        return {
            "url": self.url,
            "format": self.format,
            "size_bytes": self.size_bytes,
            "modified": self.modified,
        }


@dataclass(frozen=True, slots=True)
class InputSet:
    """The files a job reads, in the order their records are numbered."""

    fs: Any
    files: tuple[InputFile, ...]

    @property
    def total_bytes(self) -> int:
        """Sum of the file sizes."""
        return sum(f.size_bytes for f in self.files)

    def fingerprint(self) -> list[dict[str, Any]]:
        """Per file: URL, size, modification time and a sha256 of its first and last MiB."""
        return [{**f.to_dict(), "sample_sha256": self._sample_sha256(f)} for f in self.files]

    def exact_records(self) -> int | None:
        """Total records when every file is Parquet (from footers), else None."""
        if any(f.format != "parquet" for f in self.files):
            return None
        return sum(int(self._parquet(f).metadata.num_rows) for f in self.files)

    def _sample_sha256(self, file: InputFile) -> str:
        digest = hashlib.sha256(str(file.size_bytes).encode())
        with self.fs.open(file.path, "rb") as handle:
            digest.update(handle.read(SAMPLE_BYTES))
            if file.size_bytes > SAMPLE_BYTES:
                handle.seek(max(SAMPLE_BYTES, file.size_bytes - SAMPLE_BYTES))
                digest.update(handle.read(SAMPLE_BYTES))
        return digest.hexdigest()

    def _parquet(self, file: InputFile) -> pq.ParquetFile:
        if isinstance(self.fs, LocalFileSystem):  # memory-mapped reads beat a Python file object
            return pq.ParquetFile(file.path)
        return pq.ParquetFile(self.fs.open(file.path, "rb"))


def discover_inputs(spec: str) -> InputSet:
    """The files INPUT names, sorted: a file, a folder (searched recursively) or a glob.

    Hidden files and files starting with ``_`` (such as ``_SUCCESS``) are skipped in folders.
    Raises DatasetError when nothing matches or a named file has an unknown format.
    """
    try:
        return _discover(spec)
    except DatasetError:
        raise
    except ImportError as exc:  # fsspec names the package a protocol needs
        raise DatasetError(f"{spec}: {exc}") from None
    except ValueError as exc:  # an unknown protocol, a malformed URL
        raise DatasetError(f"{spec}: {exc}") from None
    except Exception as exc:  # the filesystem's own errors: unreachable host, no permission
        raise DatasetError(f"{spec}: cannot list the input: {type(exc).__name__}: {exc}") from None


def _discover(spec: str) -> InputSet:
    fs, root = fsspec.core.url_to_fs(spec)
    if any(ch in root for ch in _GLOB_CHARS):
        paths = sorted(p for p in fs.glob(root) if fs.isfile(p))
    elif fs.isdir(root):
        paths = sorted(
            p
            for p in fs.find(root)
            if _format_of(p) is not None
            and not any(part.startswith((".", "_")) for part in p[len(root) :].split("/") if part)
        )
    elif fs.isfile(root):
        paths = [root]
    else:
        raise DatasetError(f"{spec}: no such file or folder")
    if not paths:
        raise DatasetError(f"{spec}: no CSV, Parquet or JSON Lines files found")
    files = []
    for path in paths:
        fmt = _format_of(path)
        if fmt is None:
            raise DatasetError(
                f"{path}: unsupported file type; use .csv, .parquet, .jsonl or .ndjson "
                "(CSV and JSON Lines may be compressed, e.g. .csv.gz)"
            )
        info = fs.info(path)
        modified = next(
            (
                info[k]
                for k in ("mtime", "LastModified", "last_modified", "ETag", "created")
                if k in info
            ),
            "",
        )
        url = path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)
        files.append(InputFile(path, url, fmt, int(info.get("size") or 0), str(modified)))
    return InputSet(fs, tuple(files))


def _format_of(path: str) -> str | None:
    name = path.rsplit("/", 1)[-1].lower()
    for compression in COMPRESSIONS:
        if name.endswith(compression):
            name = name[: -len(compression)]
            break
    dot = name.rfind(".")
    fmt = FORMATS.get(name[dot:]) if dot > 0 else None
    if fmt == "parquet" and name != path.rsplit("/", 1)[-1].lower():
        return None  # Parquet compresses inside the file
    return fmt


@dataclass(slots=True)
class ReadProgress:
    """How far the reader got: records and bytes, for progress estimates."""

    records: int = 0
    bytes_read: int = 0


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What to read: the columns the job needs, the chunk size, and the chunks already done."""

    columns: tuple[str, ...]
    chunk_rows: int
    done: Container[int] = field(default_factory=frozenset)
    typed_columns: tuple[str, ...] = ()
    """CSV columns given a type per chunk (see ``column_types``); the others stay text."""


def iter_chunks(
    inputs: InputSet, plan: ReadPlan, progress: ReadProgress | None = None
) -> Iterator[Chunk]:
    """Every chunk not in ``plan.done``, in order; done chunks are skipped (unread for Parquet).

    Raises DatasetError when a file lacks a needed column or cannot be read at all.
    """
    progress = progress or ReadProgress()
    first_row = first_seq = bytes_before = 0
    for file in inputs.files:
        is_csv = file.format == "csv"
        cutter = _ChunkCutter(
            file.url,
            first_row,
            first_seq,
            plan.chunk_rows,
            has_lines=is_csv,
            typed=plan.typed_columns if is_csv else (),
        )
        if file.format == "parquet":
            pieces = _parquet_pieces(inputs, file, plan, cutter)
        elif file.format == "csv":
            pieces = _csv_pieces(inputs, file, plan, cutter, progress, bytes_before)
        else:
            pieces = _jsonl_pieces(inputs, file, plan, cutter, progress, bytes_before)
        for chunk in pieces:
            progress.records = max(progress.records, first_row + cutter.total_records)
            if chunk.seq not in plan.done:
                yield chunk
        first_row += cutter.total_records
        first_seq += cutter.chunk_count
        bytes_before += file.size_bytes
        progress.bytes_read = bytes_before
        progress.records = first_row


class _ChunkCutter:
    """Collects records of one file with their file-local numbers and cuts fixed-size chunks."""

    def __init__(
        self,
        url: str,
        first_row: int,
        first_seq: int,
        chunk_rows: int,
        *,
        has_lines: bool,
        typed: tuple[str, ...] = (),
    ) -> None:
        self._url, self._first_row, self.first_seq = url, first_row, first_seq
        self._size = chunk_rows
        # CSV: a record's line is its file-local number + 2 (the header is line 1).
        self._has_lines = has_lines
        self._typed = typed
        self._pieces: list[tuple[pa.Table, np.ndarray]] = []
        self._texts: list[tuple[bytes, int]] = []
        self._bad: list[tuple[int, str, str]] = []
        self._next = 0  # file-local index of the next chunk to cut
        self.total_records = 0
        self.extra_columns: tuple[str, ...] = ()
        """The file's columns the job does not read (set once its header is known)."""

    @property
    def chunk_count(self) -> int:
        """Chunks this file was cut into (valid once the file is finished)."""
        return math.ceil(self.total_records / self._size)

    def add_table(self, table: pa.Table, local_rows: np.ndarray) -> None:
        """Parsed records and their file-local numbers (ascending)."""
        if table.num_rows:
            self._pieces.append((table, local_rows))

    def add_text(self, text: bytes, line: int) -> None:
        """One JSON line; its number is the count of lines added before it."""
        self._texts.append((text, line))

    def add_bad(self, local_row: int, raw: str, reason: str) -> None:
        """A record that could not be parsed."""
        self._bad.append((local_row, raw, reason))

    def cut(self, known_records: int) -> Iterator[Chunk]:
        """Chunks entirely below ``known_records`` (every record before it has been added)."""
        self.total_records = max(self.total_records, known_records)
        while (self._next + 1) * self._size <= known_records:
            yield self._take((self._next + 1) * self._size)

    def finish(self, total_records: int) -> Iterator[Chunk]:
        """The remaining chunks, the last one short, once the file's record count is known."""
        yield from self.cut(total_records)
        self.total_records = total_records
        if self._next * self._size < total_records:
            yield self._take(total_records)

    def _take(self, end: int) -> Chunk:
        heads, rows = [], []
        keep: list[tuple[pa.Table, np.ndarray]] = []
        for table, local in self._pieces:
            cut = int(np.searchsorted(local, end))
            if cut:
                heads.append(table.slice(0, cut))
                rows.append(local[:cut])
            if cut < len(local):
                keep.append((table.slice(cut), local[cut:]))
        self._pieces = keep
        bad = [b for b in self._bad if b[0] < end]
        self._bad = [b for b in self._bad if b[0] >= end]
        seq = self.first_seq + self._next
        self._next += 1
        if self._texts:
            texts, self._texts = self._texts, []
            local = np.arange(end - len(texts), end, dtype=np.int64)
            return Chunk(
                seq=seq,
                file=self._url,
                rows=local + self._first_row,
                texts=tuple(t for t, _ in texts),
                lines=np.array([line for _, line in texts], dtype=np.int64),
            )
        local = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
        table = pa.concat_tables(heads) if heads else None
        if table is not None and self._typed:
            # Typed here, where the chunk is whole: its pieces share the reader's text schema
            # (concat_tables needs one), and every cell of the column is known at once.
            table = with_inferred_types(table, self._typed)
        return Chunk(
            seq=seq,
            file=self._url,
            rows=local + self._first_row,
            table=table,
            extra_columns=self.extra_columns,
            lines=local + 2 if self._has_lines else None,
            bad=tuple(
                Reject(self._first_row + i, self._url, i + 2, reason, clip_text(raw))
                for i, raw, reason in bad
            ),
        )


def _columns(
    file: InputFile, names: Sequence[str], plan: ReadPlan, cutter: _ChunkCutter
) -> list[str]:
    """The plan's columns, checked to be in the file (DatasetError naming those it lacks); the
    file's other columns are noted on its chunks as extra columns."""
    try:
        check_header(list(names))
    except InvalidInput as exc:
        raise DatasetError(f"{file.url}: {exc}") from None
    present = set(names)
    missing = [c for c in plan.columns if c not in present]
    if missing:
        raise DatasetError(f"{file.url}: missing column(s) {', '.join(missing)}")
    wanted = set(plan.columns)
    cutter.extra_columns = tuple(n for n in names if n not in wanted)
    return list(plan.columns)


def _parquet_pieces(
    inputs: InputSet, file: InputFile, plan: ReadPlan, cutter: _ChunkCutter
) -> Iterator[Chunk]:
    parquet = inputs._parquet(file)
    columns = _columns(file, parquet.schema_arrow.names, plan, cutter)
    size, start = plan.chunk_rows, 0
    for group in range(parquet.metadata.num_row_groups):
        count = parquet.metadata.row_group(group).num_rows
        first_chunk, last_chunk = start // size, (start + count - 1) // size
        seqs = range(cutter.first_seq + first_chunk, cutter.first_seq + last_chunk + 1)
        if count and any(seq not in plan.done for seq in seqs):
            position = start
            for batch in parquet.iter_batches(
                batch_size=min(size, 65536), row_groups=[group], columns=columns
            ):
                local = np.arange(position, position + batch.num_rows, dtype=np.int64)
                cutter.add_table(pa.Table.from_batches([batch]), local)
                position += batch.num_rows
                yield from cutter.cut(position)
        start += count
        yield from cutter.cut(start)  # chunks of skipped groups come out short, and are done
    yield from cutter.finish(start)


def _csv_pieces(
    inputs: InputSet,
    file: InputFile,
    plan: ReadPlan,
    cutter: _ChunkCutter,
    progress: ReadProgress,
    bytes_before: int,
) -> Iterator[Chunk]:
    invalid: list[tuple[int, str, str]] = []

    def on_invalid(row: Any) -> str:
        # Record numbers count the header as 1; they are known because parsing is serial.
        reason = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        invalid.append((int(row.number) - 2 if row.number else -1, str(row.text), reason))
        return "skip"

    with inputs.fs.open(file.path, "rb", compression="infer") as handle:
        names = _csv_header(handle, file)
    if names is None:
        yield from cutter.finish(0)
        return
    columns = _columns(file, names, plan, cutter)
    next_record = 0
    pending_bad: set[int] = set()  # invalid records reported but not yet passed
    with inputs.fs.open(file.path, "rb", compression="infer") as handle:
        reader = pacsv.open_csv(
            handle,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(
                newlines_in_values=True, invalid_row_handler=on_invalid
            ),
            convert_options=text_convert_options(columns),
        )
        for batch in _guard(reader, file):
            for local_row, raw, reason in invalid:
                number = local_row if local_row >= 0 else next_record
                pending_bad.add(number)
                cutter.add_bad(number, raw, reason)
            invalid.clear()
            local = _fill(next_record, batch.num_rows, pending_bad)
            cutter.add_table(pa.Table.from_batches([batch]), local)
            next_record = int(local[-1]) + 1 if len(local) else next_record
            while next_record in pending_bad:  # invalid records right after this batch
                next_record += 1
            pending_bad = {i for i in pending_bad if i >= next_record}
            _note_bytes(progress, handle, bytes_before)
            yield from cutter.cut(next_record)
    for local_row, raw, reason in invalid:  # invalid records at the end of the file
        number = local_row if local_row >= 0 else next_record
        cutter.add_bad(number, raw, reason)
        pending_bad.add(number)
    while next_record in pending_bad:
        next_record += 1
    yield from cutter.finish(next_record)


def _csv_header(handle: IO[bytes], file: InputFile) -> list[str] | None:
    """Column names from the header, or None for an empty file."""
    try:
        reader = pacsv.open_csv(
            handle,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(
                newlines_in_values=True, invalid_row_handler=lambda _row: "skip"
            ),
        )
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            return None
        raise DatasetError(f"{file.url}: cannot read as CSV: {_first_line(exc)}") from None
    return list(reader.schema.names)


def _fill(start: int, count: int, taken: set[int]) -> np.ndarray:
    """The first ``count`` numbers from ``start`` up that are not in ``taken``."""
    if not taken:
        return np.arange(start, start + count, dtype=np.int64)
    candidates = np.arange(start, start + count + len(taken), dtype=np.int64)
    free = candidates[~np.isin(candidates, np.fromiter(taken, dtype=np.int64))]
    return free[:count]


def _jsonl_pieces(
    inputs: InputSet,
    file: InputFile,
    plan: ReadPlan,
    cutter: _ChunkCutter,
    progress: ReadProgress,
    bytes_before: int,
) -> Iterator[Chunk]:
    records = 0
    with inputs.fs.open(file.path, "rb", compression="infer") as handle:
        for line_number, line in enumerate(handle, start=1):
            text = line.rstrip(b"\r\n")
            if not text.strip():
                continue  # blank lines are not records
            cutter.add_text(text, line_number)
            records += 1
            if records % plan.chunk_rows == 0:
                _note_bytes(progress, handle, bytes_before)
                yield from cutter.cut(records)
    yield from cutter.finish(records)


def _guard(reader: Any, file: InputFile) -> Iterator[pa.RecordBatch]:
    """Batches of a CSV reader, with a pyarrow failure turned into a DatasetError."""
    iterator = iter(reader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise DatasetError(f"{file.url}: cannot read as CSV: {_first_line(exc)}") from None
        yield batch


def _note_bytes(progress: ReadProgress, handle: Any, bytes_before: int) -> None:
    tell: Callable[[], int] | None = getattr(handle, "tell", None)
    with contextlib.suppress(OSError, ValueError):  # some compressed streams cannot tell
        progress.bytes_read = bytes_before + (tell() if tell else 0)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
