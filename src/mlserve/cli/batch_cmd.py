"""`mlserve batch`: score files with a registered model, resumably, locally or on Dask."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.console import Console

from mlserve.cli.context import console, context, err_console
from mlserve.errors import InvalidInput

if TYPE_CHECKING:  # imported where used: other commands should not pay for them
    from rich.progress import Progress, TaskID

    from mlserve import batch as batch_jobs

EXIT_ROWS_REJECTED = 10
"""Exit code of a job that finished but rejected some records (see the rejects file)."""
EXIT_INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT, the shell's convention)."""
PLAIN_PROGRESS_INTERVAL_S = 10.0
"""Seconds between progress lines when standard error is not a terminal."""


def batch(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS.")],
    input_: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="CSV, Parquet or JSON Lines: a file, a folder or a glob; a path or fsspec URL.",
        ),
    ],
    output: Annotated[
        Path,
        typer.Argument(help="OUT.parquet or OUT.csv for one file; any other path is a folder."),
    ],
    engine: Annotated[
        str, typer.Option(help="local: worker processes here; dask: a Dask cluster.")
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(help="Dask scheduler, e.g. tcp://host:8786 (default: a LocalCluster)."),
    ] = None,
    chunk_rows: Annotated[
        int | None,
        typer.Option(
            help="Records per chunk: the unit of work, memory and checkpoints "
            "(default: about 8 MiB of input values, 1,000 to 100,000 records)."
        ),
    ] = None,  # mlserve.batch.DEFAULT_CHUNK_ROWS; a test keeps the two equal
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes (default: this one, using the other idle cores when timing "
            "the first chunk shows the model is slow enough: a forest through threads here, "
            "other models through one helper process per core; dask: one per core)."
        ),
    ] = None,
    id_column: Annotated[
        str | None, typer.Option(help="Input column copied to the output to identify rows.")
    ] = None,
    passthrough: Annotated[
        list[str] | None,
        typer.Option(help="Input columns copied to the output; comma-separated or repeated."),
    ] = None,
    proba: Annotated[bool, typer.Option(help="Add a probability column per class.")] = False,
    keep_order: Annotated[
        bool, typer.Option(help="Keep input order (always kept: output follows input order).")
    ] = False,
    output_format: Annotated[
        str | None,
        typer.Option("--format", help="parquet or csv, for a folder OUTPUT (default parquet)."),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(help="Rejects file, JSON Lines (default: OUTPUT's name + .rejects.jsonl)."),
    ] = None,
    max_reject_rate: Annotated[
        float | None,
        typer.Option(help="Fail, writing no output, when more than this fraction is rejected."),
    ] = None,
    metrics_file: Annotated[
        Path | None,
        typer.Option(help="Write the job's Prometheus metrics here (textfile collector format)."),
    ] = None,
    show_progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress on standard error.")
    ] = True,
) -> None:
    """Score every record of INPUT with a registered model into OUTPUT, resumably.

    Records stream through in chunks, so memory stays flat whatever the input size. Each chunk
    is checkpointed; if the job stops for any reason, run the same command to resume it: every
    accepted record ends up in OUTPUT exactly once, in input order, scored by the version the
    reference meant when the job started. Records that cannot be scored go to the rejects file
    with their row number and the reason. The summary is printed as JSON. Exit code 0 means every
    record was scored, 10 that some were rejected, 4 that --max-reject-rate was exceeded, 130
    that it was interrupted (Ctrl-C; it says how far it got and how to resume).

    Example: [bold]mlserve batch churn@production customers/ scores.parquet --id-column id[/bold]
    """
    if output_format is not None and output_format not in ("parquet", "csv"):
        raise InvalidInput(f"unknown output format {output_format!r}; use parquet or csv")
    if engine not in ("local", "dask"):
        raise InvalidInput(f"unknown engine {engine!r}; use local or dask")
    if engine == "local" and workers != 1:
        from mlserve.batch import forkserver

        forkserver.start_early(forkserver.available_cores())  # imports there while we import
    # Imported here: pandas, pyarrow and scikit-learn take a second to import.
    from mlserve import batch as batch_jobs
    from mlserve.inputs import InputPolicy
    from mlserve.monitoring.batch_metrics import BatchMetrics

    cli = context(ctx)
    settings = cli.settings()
    pinned = batch_jobs.pin_model(cli.store(), ref, output)
    if pinned.is_resumed:
        err_console.print(
            f"resuming the job writing {output} with {pinned.label}, pinned when it started",
            highlight=False,
        )
    spec = batch_jobs.JobSpec(
        input=input_,
        output=output,
        chunk_rows=chunk_rows,
        engine=cast(batch_jobs.EngineName, engine),
        address=address,
        workers=workers,
        id_column=id_column,
        passthrough=tuple(c.strip() for item in passthrough or () for c in item.split(",") if c),
        proba=proba,
        keep_order=keep_order,
        output_format=cast(batch_jobs.OutputFormat | None, output_format),
        rejects_path=rejects,
        max_reject_rate=max_reject_rate,
        safe_loading=settings.safe_loading,
        input_policy=InputPolicy.from_rules(settings.input_rules_for(pinned.name)),
    )
    from prometheus_client import CollectorRegistry, write_to_textfile

    registry = CollectorRegistry()
    metrics = BatchMetrics.create(registry)
    view = ProgressView(err_console, enabled=show_progress)
    try:
        with view:
            summary = batch_jobs.run(spec, pinned, progress=view.update, metrics=metrics)
    except KeyboardInterrupt:
        err_console.print(view.interrupted_text(), highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        if metrics_file is not None:
            write_to_textfile(str(metrics_file), registry)
    console.print_json(json.dumps(summary.to_dict()))
    if summary.rows_rejected:
        err_console.print(
            f"{summary.rows_rejected} record(s) rejected; see {summary.rejects_file}",
            highlight=False,
        )
        raise typer.Exit(EXIT_ROWS_REJECTED)


class ProgressView:
    """Progress on standard error: a bar with rows/s and ETA on a terminal, else plain lines."""

    def __init__(
        self,
        stream: Console,
        *,
        enabled: bool = True,
        interval_s: float = PLAIN_PROGRESS_INTERVAL_S,
    ) -> None:
        self._stream = stream
        self._enabled = enabled
        self._interval_s = interval_s
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._last_line = 0.0
        self._latest: batch_jobs.Progress | None = None

    def __enter__(self) -> ProgressView:
        if self._enabled and self._stream.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("scoring"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} rows/s"),
                TextColumn("{task.fields[rejected]} rejected"),
                TimeRemainingColumn(),
                console=self._stream,
            )
            self._bar.start()
            self._task = self._bar.add_task("batch", total=None, rate="-", rejected=0)
        self._last_line = time.monotonic()
        return self

    def update(self, progress: batch_jobs.Progress) -> None:
        """Show ``progress`` (plain lines at most every interval)."""
        self._latest = progress
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task,
                completed=progress.rows_done,
                total=progress.rows_total,
                rate=f"{_rate(progress):,.0f}",
                rejected=progress.rows_rejected,
            )
        elif self._enabled and time.monotonic() - self._last_line >= self._interval_s:
            self._print_line(progress)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self._enabled and self._latest is not None:
            self._print_line(self._latest)

    def interrupted_text(self) -> str:
        """What an interrupted job got done, and how to resume it."""
        latest = self._latest
        done = "before the first chunk was done"
        if latest is not None:
            done = f"after {latest.rows_done:,} records"
            if latest.rows_total:
                done += f" of ~{latest.rows_total:,}"
        command = shlex.join(["mlserve", *sys.argv[1:]])
        return (
            f"interrupted {done}; every finished chunk is checkpointed. "
            f"Run the same command to resume: {command}"
        )

    def _print_line(self, progress: batch_jobs.Progress) -> None:
        self._last_line = time.monotonic()
        rate = _rate(progress)
        total = progress.rows_total
        parts = [f"batch: {progress.rows_done:,} rows"]
        if total:
            parts[0] += f" of ~{total:,} ({progress.rows_done / total:.0%})"
        parts.append(f"{rate:,.0f} rows/s")
        parts.append(f"{progress.rows_rejected:,} rejected")
        if total and rate > 0 and total > progress.rows_done:
            parts.append(f"eta {(total - progress.rows_done) / rate:,.0f}s")
        self._stream.print(" · ".join(parts), highlight=False, soft_wrap=True)


def _rate(progress: batch_jobs.Progress) -> float:
    return progress.rows_this_run / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
