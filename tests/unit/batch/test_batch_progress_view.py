"""`mlserve batch` progress: a bar with rows/s and ETA on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from rich.console import Console

from mlserve.batch import Progress
from mlserve.cli.batch_cmd import ProgressView


def progress(done: int) -> Progress:
    """A job 2 s in, ``done`` of 10,000 rows through, 5 rejected."""
    return Progress(
        rows_done=done,
        rows_total=10_000,
        rows_scored=done - 5,
        rows_rejected=5,
        elapsed_s=2.0,
        rows_this_run=done,
    )


def test_plain_lines_off_a_terminal_give_rate_rejects_and_eta() -> None:
    sink = io.StringIO()
    console = Console(file=sink, force_terminal=False, width=200)
    with ProgressView(console, interval_s=0) as view:
        view.update(progress(4000))
    lines = sink.getvalue().splitlines()
    assert lines[0] == "batch: 4,000 rows of ~10,000 (40%) · 2,000 rows/s · 5 rejected · eta 3s"
    assert lines[-1] == lines[0]  # the last state is printed again when the job ends


def test_a_terminal_gets_a_bar_with_rows_per_second() -> None:
    sink = io.StringIO()
    console = Console(file=sink, force_terminal=True, width=200)
    with ProgressView(console) as view:
        view.update(progress(4000))
    assert "4000/10000" in sink.getvalue()
    assert "2,000 rows/s" in sink.getvalue()


def test_no_progress_prints_nothing() -> None:
    sink = io.StringIO()
    with ProgressView(Console(file=sink), enabled=False, interval_s=0) as view:
        view.update(progress(4000))
    assert sink.getvalue() == ""
