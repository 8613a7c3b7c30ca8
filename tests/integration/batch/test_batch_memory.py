"""Peak memory of `mlserve batch` does not grow with the input: it streams."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from batch_harness import BatchProject, cli_env, input_frame

# Runs the real command in a fresh interpreter and reports that process's peak RSS (KiB).
# VmHWM, not getrusage: ru_maxrss survives fork+exec, so it would report this test's own RSS.
PEAK_RSS_SCRIPT = """
import re, sys
from pathlib import Path
from mlserve.cli.main import run
code = run(sys.argv[2:])
status = Path("/proc/self/status").read_text()
Path(sys.argv[1]).write_text(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
sys.exit(code)
"""
GROWTH_LIMIT_MIB = 15
"""Allowed peak-RSS difference; holding the larger input's 100-character notes alone takes 20."""


def peak_rss_mib(project: BatchProject, source: Path, output: Path) -> float:
    """Score ``source`` with one worker in chunks of 5,000 rows, carrying its ``note`` column.

    Returns the process's peak RSS in MiB.
    """
    report = project.root / f"{output.name}.rss"
    args = [
        *("--home", str(project.home), "batch", "churn", str(source), str(output)),
        *("--workers", "1", "--chunk-rows", "5000", "--id-column", "id", "--passthrough", "note"),
    ]
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_SCRIPT, str(report), *args],
        cwd=project.root,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return int(report.read_text()) / 1024


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_peak_memory_of_200k_rows_is_that_of_20k_rows(project: BatchProject) -> None:
    small, large = project.root / "small.csv", project.root / "large.csv"
    frame = input_frame(200_000)
    frame["note"] = [f"{i:08d}".ljust(100, "x") for i in range(len(frame))]
    frame.head(20_000).to_csv(small, index=False)
    frame.to_csv(large, index=False)
    del frame
    # The least of two runs each: a peak is only ever inflated (one run of the full suite on a
    # busy machine saw 19 MiB more for the large file, the next runs none), never deflated.
    small_mib = min(
        peak_rss_mib(project, small, project.root / f"small-{i}.parquet") for i in (1, 2)
    )
    large_mib = min(
        peak_rss_mib(project, large, project.root / f"large-{i}.parquet") for i in (1, 2)
    )
    assert large_mib - small_mib < GROWTH_LIMIT_MIB, (small_mib, large_mib)
