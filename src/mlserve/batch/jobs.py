"""Batch jobs: what to run (JobSpec), running it (run) and what it did (JobSummary).

A job streams INPUT in deterministic chunks, scores them on an engine, checkpoints each chunk
(see ``checkpoint.py``) and assembles OUTPUT and the rejects file from them (``assembly.py``),
which appear once every chunk is done.
Run the same job again after any interruption and it resumes: finished chunks are skipped, the
input and model are checked against the job's manifest, and the model version pinned at the
start is used throughout.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from mlserve.batch.assembly import OutputAssembler, assemble_rejects, fallback_schema
from mlserve.batch.checkpoint import MANIFEST_FORMAT, ChunkReport, JobState
from mlserve.batch.engines import Engine, local_engine
from mlserve.batch.forkserver import available_cores
from mlserve.batch.pinning import PinnedModel
from mlserve.batch.readers import InputSet, ReadPlan, ReadProgress, discover_inputs, iter_chunks
from mlserve.batch.scoring import PROBA_PREFIX, RESERVED_COLUMNS, ScoringOptions
from mlserve.batch.workers import ChunkTask, cached_runtime, load_model
from mlserve.batch.writers import OutputFormat, OutputTarget
from mlserve.errors import Conflict, DatasetError, InvalidInput
from mlserve.inputs import InputPolicy
from mlserve.monitoring.batch_metrics import BatchMetrics

log = logging.getLogger(__name__)

EngineName = Literal["local", "dask"]
DEFAULT_CHUNK_ROWS: int | None = None
"""None: each job sizes its chunks by the width of its input (see ``chunk_rows_for``)."""
CHUNK_BYTES = 8 << 20
"""Default chunk size in bytes of input values (8 per value read): large enough that what a
chunk costs besides its rows (a predict call, a part, a marker, an fsync) disappears in them,
small enough that a few chunks per worker in flight stay within memory whatever the width."""
CHUNK_ROWS_RANGE = (1_000, 100_000)
"""Bounds of the default chunk size in records."""
REJECTS_SUFFIX = ".rejects.jsonl"


def chunk_rows_for(columns: int) -> int:
    """Records per chunk when none is asked for: CHUNK_BYTES of ``columns`` values each."""
    low, high = CHUNK_ROWS_RANGE
    return max(low, min(high, CHUNK_BYTES // (8 * max(columns, 1))))


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything that defines a batch job besides the model.

    Output rows are always in input order (parts are numbered by chunk and assembled in that
    order), so ``keep_order`` costs nothing; it is kept so callers can state the requirement.
    """

    input: str | os.PathLike[str]
    """A file, a folder or a glob of CSV, Parquet or JSON Lines files; a path or fsspec URL.
    A string or a path, as for ``output`` and ``rejects_path``."""
    output: Path | str
    """``*.parquet`` / ``*.csv`` for one file; any other path is a folder of part files."""
    chunk_rows: int | None = DEFAULT_CHUNK_ROWS
    """Records per chunk; None sizes chunks by the input's width (``chunk_rows_for``)."""
    engine: EngineName = "local"
    address: str | None = None
    """Dask scheduler address (``tcp://host:8786``); None starts a LocalCluster."""
    workers: int | None = None
    """Worker processes. None: for the local engine, this process alone unless its first chunk
    shows that workers on the other idle cores pay off (see ``AutoEngine``); for Dask, one per
    core of a LocalCluster."""
    id_column: str | None = None
    passthrough: tuple[str, ...] = ()
    proba: bool = False
    keep_order: bool = False
    output_format: OutputFormat | None = None
    """Format of a folder output (a file output takes its suffix's); default Parquet."""
    rejects_path: Path | str | None = None
    """Default: OUTPUT with ``.rejects.jsonl`` in place of its suffix."""
    max_reject_rate: float | None = None
    """Fail the job (and write no output) when more than this fraction of records is rejected."""
    safe_loading: bool = False
    input_policy: InputPolicy = field(default_factory=InputPolicy)
    """The model's input rules, as the server applies them (``Settings.input_rules_for``)."""

    def check(self) -> None:
        """Raise InvalidInput naming the first inconsistent option."""
        if self.chunk_rows is not None and self.chunk_rows < 1:
            raise InvalidInput("--chunk-rows must be at least 1")
        if self.workers is not None and self.workers < 1:
            raise InvalidInput("--workers must be at least 1")
        if self.engine not in ("local", "dask"):
            raise InvalidInput(f"unknown engine {self.engine!r}; use local or dask")
        if self.address is not None and self.engine != "dask":
            raise InvalidInput("--address is for --engine dask")
        if self.max_reject_rate is not None and not 0 <= self.max_reject_rate <= 1:
            raise InvalidInput("--max-reject-rate is a fraction between 0 and 1")
        if "://" in str(self.output):
            raise InvalidInput("OUTPUT must be a local path (remote outputs are not supported yet)")
        for name in self.passthrough:
            if name in RESERVED_COLUMNS or name.startswith(PROBA_PREFIX):
                raise InvalidInput(f"--passthrough {name!r} would overwrite an output column")

    @property
    def rejects_file(self) -> Path:
        """Where the rejects go."""
        if self.rejects_path is not None:
            return Path(self.rejects_path).absolute()
        output = self.output_path.absolute()
        stem = output.stem if output.suffix.lower() in (".parquet", ".pq", ".csv") else output.name
        return output.with_name(stem + REJECTS_SUFFIX)

    @property
    def output_path(self) -> Path:
        """``output`` as a Path."""
        return Path(self.output)

    @property
    def input_spec(self) -> str:
        """``input`` as a string: a path, a glob or an fsspec URL."""
        return os.fspath(self.input)

    @property
    def worker_count(self) -> int:
        """Workers to start up front: as asked, else one per core this process may use."""
        return self.workers if self.workers is not None else available_cores()


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a running job is; handed to the progress callback after every chunk."""

    rows_done: int
    """Records scored or rejected so far, including chunks finished before a resume."""
    rows_total: int | None
    """Exact for Parquet input; estimated from bytes read for CSV and JSON Lines."""
    rows_scored: int
    rows_rejected: int
    elapsed_s: float
    rows_this_run: int
    """Records processed by this run (the base for rows/s)."""


@dataclass(frozen=True, slots=True)
class JobSummary:
    """What a finished job did: the numbers of the JSON summary and of the metrics."""

    status: str
    model: str
    version: int
    model_sha256: str
    engine: str
    workers: int
    threads: int
    """Threads each process scored on (``AutoEngine`` uses more for a forest on idle cores)."""
    rows_read: int
    rows_scored: int
    rows_rejected: int
    chunks: int
    chunks_resumed: int
    model_loads: int
    seconds: float
    rows_per_second: float
    output: str
    rejects_file: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


ProgressCallback = Callable[[Progress], None]


def run(
    spec: JobSpec,
    model: PinnedModel,
    *,
    progress: ProgressCallback | None = None,
    metrics: BatchMetrics | None = None,
) -> JobSummary:
    """Run (or resume) a batch job to the end and return its summary.

    Raises Conflict when the job's input, model or options changed since it started (or another
    process runs it), DatasetError when unreadable input or too many rejects stop it, and
    ArtifactError when the model cannot be loaded. Whatever stops it, finished chunks are kept
    and the same call resumes.

    With several local workers, worker processes come from a forkserver, which imports the
    caller's ``__main__``: a script calling this must guard its entry point with
    ``if __name__ == "__main__":``, as for any multiprocessing code.
    """
    started = time.monotonic()
    spec.check()
    target = OutputTarget.from_path(spec.output_path, spec.output_format)
    state = JobState.for_output(target.path, target.part_format)
    tally = _Tally(model, metrics, started, discover_inputs(spec.input_spec))
    engine = _engine(spec, model, state, tally)  # workers start while this process gets ready
    try:
        return _run(spec, model, engine, tally, progress)
    finally:
        engine.close()


def _run(
    spec: JobSpec,
    model: PinnedModel,
    engine: Engine,
    tally: _Tally,
    progress: ProgressCallback | None,
) -> JobSummary:
    """The body of :func:`run`, once the engine is starting."""
    target = OutputTarget.from_path(spec.output_path, spec.output_format)
    state = JobState.for_output(target.path, target.part_format)
    load_model(model.folder, model.sha256, spec.safe_loading)  # fail here, not in a worker
    runtime = cached_runtime(model.sha256)
    if spec.proba and not runtime.has_proba:
        raise InvalidInput("--proba: this model does not give probabilities (no predict_proba)")
    options = ScoringOptions(
        model.label, spec.id_column, spec.passthrough, spec.proba, spec.input_policy
    )
    columns = options.input_columns(model.signature.feature_names)
    chunk_rows = spec.chunk_rows or chunk_rows_for(len(columns))
    inputs = tally.inputs
    with state.locked():
        resumed = _open(state, _manifest(spec, chunk_rows, target, inputs, model, options))
        with OutputAssembler(state, target, stream=not engine.scores_here) as assembler:
            for report in resumed.values():
                tally.add(report, this_run=False)
                assembler.add(report)
            plan = ReadPlan(
                columns,
                chunk_rows,
                done=frozenset(resumed),
                typed_columns=_typed_columns(options, model.signature.feature_names),
            )
            tasks = (
                ChunkTask(chunk, state.root, options, model.sha256, state.parts)
                for chunk in iter_chunks(inputs, plan, tally.read)
            )
            log.info(
                "batch job started",
                extra={
                    "model": model.name,
                    "version": model.version,
                    "resumed_chunks": len(resumed),
                },
            )
            for report in engine.map_chunks(tasks):
                tally.add(report, this_run=True)
                assembler.add(report)
                if progress is not None:
                    progress(tally.progress())
            proba_columns = [f"{PROBA_PREFIX}{c}" for c in runtime.classes] if spec.proba else []
            fallback = fallback_schema(options.carried, spec.id_column is not None, proba_columns)
            _finish(spec, state, assembler, tally, fallback)
    summary = tally.summary(spec, engine, target, resumed=len(resumed))
    tally.record_run(succeeded=True)
    log.info("batch job finished", extra={"model": model.name, "version": model.version})
    return summary


def _typed_columns(options: ScoringOptions, features: list[str]) -> tuple[str, ...]:
    """Carried columns a CSV chunk types (int ids stay ints): those that are not features.

    Features are checked from their text, and a typed copy would be checked differently: a
    boolean feature's ``2`` is refused as text but passes as the number 2, a categorical
    ``1.50`` would become ``1.5``, and an int64 beyond 2**53 fails float conversion.
    """
    feature_names = set(features)
    return tuple(name for name in options.carried if name not in feature_names)


def _open(state: JobState, manifest: dict[str, Any]) -> dict[int, ChunkReport]:
    """Start the job, or check that it is the one that started; returns its finished chunks."""
    existing = state.read_manifest()
    if existing is None:
        state.start(manifest)
    else:
        _check_resumable(existing, manifest, state)
    state.remove_temporary_files()
    return state.done_chunks()


def _finish(
    spec: JobSpec,
    state: JobState,
    assembler: OutputAssembler,
    tally: _Tally,
    fallback: pa.Schema,
) -> None:
    """Write the rejects file, check the reject rate, put OUTPUT in place, drop the state."""
    assemble_rejects(state, tally.reports, spec.rejects_file)
    problem = _reject_rate_problem(spec, tally)
    if problem is not None:
        tally.record_run(succeeded=False)
        raise DatasetError(problem)
    assembler.finish(tally.reports, fallback)
    state.remove()


def _engine(spec: JobSpec, model: PinnedModel, state: JobState, tally: _Tally) -> Engine:
    if spec.engine == "dask":
        from mlserve.batch.dask_engine import DaskEngine  # keeps Dask an optional extra

        return DaskEngine(
            model,
            workers=spec.worker_count,
            address=spec.address,
            safe=spec.safe_loading,
            state_root=state.root,
        )
    return local_engine(
        model,
        workers=spec.workers,
        cores=available_cores(),
        safe=spec.safe_loading,
        records_left=tally.records_left,
    )


class _Tally:
    """Counts of a run, fed one chunk report at a time; also feeds the metrics."""

    def __init__(
        self, model: PinnedModel, metrics: BatchMetrics | None, started: float, inputs: InputSet
    ) -> None:
        self._model, self._metrics, self._started = model, metrics, started
        self.inputs = inputs
        self._exact_total = inputs.exact_records()
        self.read = ReadProgress()
        self.reports: list[ChunkReport] = []
        self.records = self.scored = self.rejected = self.records_this_run = 0
        self._loads: set[str] = set()

    def add(self, report: ChunkReport, *, this_run: bool) -> None:
        """Count a finished chunk."""
        self.reports.append(report)
        self.records += report.records
        self.scored += report.scored
        self.rejected += report.rejected
        if this_run:
            self.records_this_run += report.records
            self._loads.add(report.loaded_by)
        if self._metrics is not None:
            self._metrics.record_chunk(
                self._model.name,
                self._model.version,
                records=report.records,
                scored=report.scored,
                rejected=report.rejected,
            )

    def progress(self) -> Progress:
        """Where the job is now."""
        total = self._exact_total
        if total is None and self.read.bytes_read > 0:
            estimate = self.read.records * self.inputs.total_bytes / self.read.bytes_read
            total = max(int(estimate), self.records)
        return Progress(
            rows_done=self.records,
            rows_total=total,
            rows_scored=self.scored,
            rows_rejected=self.rejected,
            elapsed_s=time.monotonic() - self._started,
            rows_this_run=self.records_this_run,
        )

    def records_left(self) -> int | None:
        """Records not scored yet (estimated for CSV and JSON Lines), None when unknown."""
        total = self.progress().rows_total
        return None if total is None else max(total - self.records, 0)

    @property
    def rows_per_second(self) -> float:
        """Records processed by this run per second of it."""
        seconds = time.monotonic() - self._started
        return round(self.records_this_run / seconds, 1) if seconds > 0 else 0.0

    def record_run(self, *, succeeded: bool) -> None:
        """Feed the end of this run to the metrics."""
        if self._metrics is not None:
            self._metrics.record_run(
                self._model.name,
                self._model.version,
                seconds=time.monotonic() - self._started,
                rows_per_second=self.rows_per_second,
                succeeded=succeeded,
            )

    def summary(
        self, spec: JobSpec, engine: Engine, target: OutputTarget, *, resumed: int
    ) -> JobSummary:
        """The finished job's summary."""
        seconds = time.monotonic() - self._started
        return JobSummary(
            status="complete",
            model=self._model.name,
            version=self._model.version,
            model_sha256=self._model.sha256,
            engine=engine.name,
            workers=engine.workers,
            threads=engine.threads,
            rows_read=self.records,
            rows_scored=self.scored,
            rows_rejected=self.rejected,
            chunks=len(self.reports),
            chunks_resumed=resumed,
            model_loads=len(self._loads),
            seconds=round(seconds, 3),
            rows_per_second=self.rows_per_second,
            output=str(target.path),
            rejects_file=str(spec.rejects_file),
        )


def _manifest(
    spec: JobSpec,
    chunk_rows: int,
    target: OutputTarget,
    inputs: InputSet,
    model: PinnedModel,
    options: ScoringOptions,
) -> dict[str, Any]:
    """What the job is: compared field by field when it resumes."""
    return {
        "format": MANIFEST_FORMAT,
        "input": {"spec": spec.input_spec, "files": inputs.fingerprint()},
        "model": model.describe(),
        "options": {
            "chunk_rows": chunk_rows,
            "id_column": options.id_column,
            "passthrough": list(options.passthrough),
            "proba": options.proba,
            "input_policy": asdict(options.policy),
            "output": target.describe(),
        },
    }


def _check_resumable(old: dict[str, Any], new: dict[str, Any], state: JobState) -> None:
    """Raise Conflict when the job to resume differs from the one that started."""
    start_over = f"; refusing to resume. Restore it, or delete {state.root} to start over"
    if old.get("format") != MANIFEST_FORMAT:
        raise Conflict(f"{state.root} was written by another mlserve version{start_over}")
    old_model, new_model = old.get("model", {}), new["model"]
    if old_model != new_model:
        raise Conflict(
            f"the job started with model {old_model.get('name')}:{old_model.get('version')} "
            f"(sha256 {str(old_model.get('sha256'))[:12]}…), not "
            f"{new_model['name']}:{new_model['version']} "
            f"(sha256 {new_model['sha256'][:12]}…){start_over}"
        )
    for problem in _input_changes(old.get("input", {}).get("files", []), new["input"]["files"]):
        raise Conflict(f"{problem}{start_over}")
    old_options, new_options = old.get("options", {}), new["options"]
    changed = [k for k in new_options if old_options.get(k) != new_options[k]]
    if changed:
        details = ", ".join(
            f"{k.replace('_', '-')} {old_options.get(k)!r} then, {new_options[k]!r} now"
            for k in changed
        )
        raise Conflict(f"the job was started with other options ({details}){start_over}")


def _input_changes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> Iterator[str]:
    """Human sentences for every way the input differs from when the job started."""
    old_urls, new_urls = [f["url"] for f in old], [f["url"] for f in new]
    if old_urls != new_urls:
        added = sorted(set(new_urls) - set(old_urls))
        removed = sorted(set(old_urls) - set(new_urls))
        yield (
            f"the input files changed since the job started (added: {', '.join(added) or 'none'}; "
            f"removed: {', '.join(removed) or 'none'})"
        )
        return
    for before, after in zip(old, new, strict=True):
        if before["size_bytes"] != after["size_bytes"]:
            yield (
                f"input {after['url']} changed since the job started "
                f"({before['size_bytes']} bytes then, {after['size_bytes']} now)"
            )
        elif before["sample_sha256"] != after["sample_sha256"]:
            yield f"input {after['url']} changed since the job started (different content)"
        elif before["modified"] != after["modified"]:
            yield f"input {after['url']} changed since the job started (modified since)"


def _reject_rate_problem(spec: JobSpec, tally: _Tally) -> str | None:
    """Why the job fails its --max-reject-rate, or None when it passes."""
    if spec.max_reject_rate is None or tally.records == 0:
        return None
    rate = tally.rejected / tally.records
    if rate <= spec.max_reject_rate:
        return None
    return (
        f"{tally.rejected} of {tally.records} records rejected ({rate:.2%}), more than "
        f"--max-reject-rate {spec.max_reject_rate:.2%}; see {spec.rejects_file}. The output "
        "was not written; rerun with a higher limit to write it without rescoring"
    )
