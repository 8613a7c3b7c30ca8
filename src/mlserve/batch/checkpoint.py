"""A job's state folder beside its output: manifest, lock, and one part and done-marker per chunk.

Layout of ``OUTPUT.mlserve-job/``::

    manifest.json        input fingerprint, pinned model, options (written once, at the start)
    lock                 held (flock) by the running job; the kernel drops it when the job dies
    done/000042.json     chunk 42 is complete: its counts, and whether it has a part or rejects
    parts/part-00042.arrow     (or .parquet, see PartFormat)
    rejects/000042.jsonl

Every file is written to a temporary name and renamed into place, and a chunk's done-marker is
written only after its part and rejects: a chunk without a marker is redone from scratch, one
with a marker is never redone. Chunks are cut deterministically, so a redone chunk replaces the
files of an interrupted attempt with the same content, which is what makes the output exactly
once whatever moment the job is killed at.

A killed process loses nothing the kernel has accepted, so only a crash of the machine needs
fsync: parts and rejects are flushed before their marker is renamed into place (a marker must
never outlive the data it vouches for), while the marker itself is not flushed: a marker lost
in a crash only means its chunk is redone, and one left empty is ignored like a missing one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Literal

from mlserve.errors import Conflict

STATE_SUFFIX = ".mlserve-job"
MANIFEST_FORMAT = 3
"""Layout of the state folder; 2 added Arrow parts and unflushed markers, 3 the input policy
(rows are judged by the shared input checker, so an older job's parts would disagree)."""
_TEMP_PREFIX = ".tmp-"

PartFormat = Literal["arrow", "parquet"]
"""How chunk parts are stored. Arrow IPC files cost a memory copy to write and nothing to read
back (memory-mapped), so OUTPUT files are assembled from them with one encoding pass; a Parquet
folder OUTPUT gets Parquet parts, which become its part files by a rename."""


@dataclass(frozen=True, slots=True)
class ChunkReport:
    """What a finished chunk holds; written as its done-marker."""

    seq: int
    records: int
    scored: int
    rejected: int
    has_part: bool
    has_rejects: bool
    loaded_by: str = ""
    """Which model load scored it (host, process, load number): counts loads per job."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChunkReport:
        """Read a done-marker."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class JobState:
    """The state folder of the job writing ``output``."""

    def __init__(self, root: Path, parts: PartFormat = "arrow") -> None:
        self.root = root
        self.parts: PartFormat = parts
        self._lock: IO[bytes] | None = None

    @classmethod
    def for_output(cls, output: Path, parts: PartFormat = "arrow") -> JobState:
        """The state folder of the job that writes ``output``: ``OUTPUT.mlserve-job``."""
        output = output.absolute()
        return cls(output.with_name(output.name + STATE_SUFFIX), parts)

    @property
    def manifest_path(self) -> Path:
        """Where the job manifest lives."""
        return self.root / "manifest.json"

    def part_path(self, seq: int) -> Path:
        """Chunk ``seq``'s output rows."""
        return self.root / "parts" / f"part-{seq:05d}.{self.parts}"

    def rejects_path(self, seq: int) -> Path:
        """Chunk ``seq``'s rejects, one JSON object a line."""
        return self.root / "rejects" / f"{seq:06d}.jsonl"

    def marker_path(self, seq: int) -> Path:
        """Chunk ``seq``'s done-marker."""
        return self.root / "done" / f"{seq:06d}.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the job's lock; raises Conflict when another process runs this job."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = (self.root / "lock").open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise Conflict(
                f"another mlserve batch job is writing {self.root.name[: -len(STATE_SUFFIX)]} "
                f"(it holds {self.root / 'lock'}); wait for it or stop it first"
            ) from None
        try:
            yield
        finally:
            if not self.manifest_path.exists():  # the job never started, or finished: no state
                shutil.rmtree(self.root, ignore_errors=True)
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest of a started job, or None when none was started."""
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return data if isinstance(data, dict) else None

    def start(self, manifest: dict[str, Any]) -> None:
        """Begin a fresh job: clear leftovers of an older one and write its manifest."""
        for name in ("parts", "rejects", "done"):
            shutil.rmtree(self.root / name, ignore_errors=True)
        for name in ("parts", "rejects", "done"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        write_atomic(self.manifest_path, json.dumps(manifest, indent=2).encode())

    def done_chunks(self) -> dict[int, ChunkReport]:
        """Every chunk with a readable done-marker.

        Markers are not flushed to disk, so after a machine crash one may be empty; its chunk
        counts as not done, and redoing it replaces the marker.
        """
        reports = {}
        for path in (self.root / "done").glob("*.json"):
            try:
                report = ChunkReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, KeyError, TypeError):
                continue
            reports[report.seq] = report
        return reports

    def remove_temporary_files(self) -> None:
        """Delete files a killed writer left half-written (only call while holding the lock).

        That includes a one-file OUTPUT being assembled in the state folder itself.
        """
        for folder in (self.root, *(self.root / name for name in ("parts", "rejects", "done"))):
            for path in folder.glob(f"{_TEMP_PREFIX}*"):
                path.unlink(missing_ok=True)

    def remove(self) -> None:
        """Delete the state folder once the job's output is complete."""
        self.manifest_path.unlink(missing_ok=True)  # first: a half-removed folder is no job
        shutil.rmtree(self.root, ignore_errors=True)


def temporary_path(path: Path) -> Path:
    """A unique name beside ``path`` for writing it before the rename.

    Unique per writer, so two processes finishing the same chunk never share a file.
    """
    return path.with_name(f"{_TEMP_PREFIX}{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")


def commit(temporary: Path, path: Path, *, flush: bool = True) -> None:
    """Rename ``temporary`` to ``path`` in one step; with ``flush``, fsync it first."""
    if flush:
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(temporary, path)


def write_atomic(path: Path, data: bytes, *, flush: bool = True) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a part.

    ``flush=False`` skips the fsync: for files whose loss in a machine crash costs only a redo.
    """
    temporary = temporary_path(path)
    try:
        temporary.write_bytes(data)
        commit(temporary, path, flush=flush)
    finally:
        temporary.unlink(missing_ok=True)
