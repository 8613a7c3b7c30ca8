"""`mlserve drift` end to end: a trained model, a prediction log written by the real store, and
the real command in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_harness import (
    Call,
    Result,
    assert_ok,
    assert_one_line_error,
    cli_env,
    open_registry,
    run_cli_all,
)
from drift_customers import customers

from mlserve.monitoring.predlog import PredictionLogStore, PredictionRecord
from mlserve.registry import NewVersion
from mlserve.runtimes import load_runtime
from mlserve.training import TrainRequest, train

FEATURES = ["plan", "region", "monthly", "tenure"]


@dataclass(frozen=True)
class DriftProject:
    """A project whose prediction log holds a shifted window of churn and a steady one of
    steady (plus a shifted one two days old); bare has no reference profile."""

    folder: Path


def log_window(
    store: PredictionLogStore, model: str, frame: pd.DataFrame, end: datetime, runtime: object
) -> None:
    """Write one record per row, as the server would, spread over the minute before ``end``."""
    predictions = runtime.predict(frame)  # type: ignore[attr-defined]  # a Runtime
    step = timedelta(seconds=60 / len(frame))
    records = [
        PredictionRecord(
            ts=end - step * (len(frame) - i),
            request_id=f"{model}-{end:%H%M%S}-{i}",
            row=0,
            model=model,
            version="1",
            inputs={str(k): (None if pd.isna(v) else v) for k, v in row.items()},
            prediction=str(predictions[i]),
            proba=None,
            latency_ms=1.0,
        )
        for i, row in enumerate(frame[FEATURES].to_dict("records"))
    ]
    store.write(records)


@pytest.fixture(scope="module")
def drift_project(tmp_path_factory: pytest.TempPathFactory) -> DriftProject:
    folder = tmp_path_factory.mktemp("drift-project")
    training = customers(1500, seed=0)
    training["churned"] = np.where(training["monthly"] + 0.5 * training["tenure"] > 65, "y", "n")
    training.to_csv(folder / "churn.csv", index=False)
    with open_registry(folder) as store:
        version = train(
            store, TrainRequest(data=folder / "churn.csv", target="churned", name="churn")
        ).version
        model_file = store.local_folder(version) / version.model_file
        for name, profile in (("steady", version.reference_profile), ("bare", None)):
            store.register_version(
                name,
                model_file,
                NewVersion("sklearn", version.signature, reference_profile=profile),
            )
        runtime = load_runtime(store.local_folder(version))
    log = PredictionLogStore(f"sqlite:///{folder / '.mlserve' / 'predictions.db'}")
    try:
        now = datetime.now(UTC) - timedelta(minutes=1)  # every record is at least a minute old
        log_window(log, "churn", customers(400, seed=1, monthly_shift=8.0), now, runtime)
        log_window(log, "steady", customers(400, seed=2), now, runtime)
        log_window(
            log, "steady", customers(400, 3, monthly_shift=8.0), now - timedelta(days=2), runtime
        )
    finally:
        log.close()
    return DriftProject(folder)


@pytest.fixture(scope="module")
def results(drift_project: DriftProject) -> dict[str, Result]:
    """Every invocation the tests look at, run side by side."""
    cwd = drift_project.folder
    calls = {
        "shifted": ["drift", "churn", "--html", "report.html"],
        "steady": ["drift", "steady", "--window", "1h", "--json"],
        "steady_3d": ["drift", "steady:1", "--window", "3d"],
        "too_few": ["drift", "churn", "--min-rows", "100000"],
        "unknown": ["drift", "nope"],
        "bare": ["drift", "bare"],
        "bad_window": ["drift", "churn", "--window", "1x"],
        "empty": ["drift", "churn", "--window", "30s"],
    }
    runs = {key: Call(args, cwd) for key, args in calls.items()}
    runs["no_log"] = Call(
        ["drift", "churn"], cwd, {"MLSERVE_PREDICTION_LOG_URL": f"sqlite:///{cwd / 'none.db'}"}
    )
    return run_cli_all(runs)


def table_row(output: str, feature: str) -> str:
    return next(line for line in output.splitlines() if line.strip("│ ").startswith(feature))


def assert_drift_found(result: Result) -> None:
    """Exit code 9 (drift detected, documented for scheduled jobs), and no error."""
    assert result.returncode == 9, result.stderr
    assert "Traceback" not in result.stderr
    assert "error:" not in result.stderr


def test_a_shifted_window_is_reported_as_drift_in_the_table(results: dict[str, Result]) -> None:
    result = results["shifted"]
    assert_drift_found(result)
    assert "drift detected" in result.stdout
    assert "yes" in table_row(result.stdout, "monthly")
    for steady in ("plan", "region", "tenure"):
        assert "yes" not in table_row(result.stdout, steady)
    assert "KS" in table_row(result.stdout, "monthly")
    assert "chi2 + PSI" in table_row(result.stdout, "plan")
    assert "(predictions)" in result.stdout
    assert "400 rows in the last 1h" in result.stdout


def test_the_html_report_is_written_with_a_plot_per_feature(
    results: dict[str, Result], drift_project: DriftProject
) -> None:
    assert_drift_found(results["shifted"])
    page = (drift_project.folder / "report.html").read_text(encoding="utf-8")
    tags: list[tuple[str, dict[str, str | None]]] = []
    parser = HTMLParser()
    parser.handle_starttag = lambda tag, attrs: tags.append((tag, dict(attrs)))  # type: ignore[method-assign]
    parser.feed(page)
    assert sum(tag == "svg" for tag, _ in tags) == len(FEATURES) + 1  # and the predictions
    external = [
        value
        for _tag, attrs in tags
        for key, value in attrs.items()
        if key in ("src", "href") and value and value.lower().startswith(("http", "//"))
    ]
    assert external == []
    assert "Drift detected" in page
    assert "wrote the drift report" in results["shifted"].stderr


def test_a_steady_window_is_not_drift_and_prints_json(results: dict[str, Result]) -> None:
    result = results["steady"]
    assert_ok(result)
    report = json.loads(result.stdout)
    assert report["status"] == "no drift"
    assert report["window_rows"] == 400
    assert report["model"] == "steady"
    assert {f["name"] for f in report["features"]} == {*FEATURES, "__prediction__"}
    assert not any(f["drifted"] for f in report["features"])


def test_the_window_option_reaches_older_records(results: dict[str, Result]) -> None:
    result = results["steady_3d"]
    assert_drift_found(result)
    assert "800 rows in the last 3d" in result.stdout
    assert "drift detected" in result.stdout


def test_too_few_rows_say_insufficient_data(results: dict[str, Result]) -> None:
    assert_ok(results["too_few"])
    assert "insufficient data" in results["too_few"].stdout


def test_mistakes_are_one_line_errors(results: dict[str, Result]) -> None:
    assert_one_line_error(results["unknown"], 3, "'nope'", "not registered")
    assert_one_line_error(results["bare"], 3, "bare:1 has no reference profile")
    assert_one_line_error(results["bad_window"], 4, "invalid duration '1x'")
    assert_one_line_error(results["empty"], 3, "no predictions of churn:1", "last 30s")
    assert_one_line_error(results["no_log"], 3, "no prediction log at", "none.db")


def test_the_html_report_without_matplotlib_names_the_extra(drift_project: DriftProject) -> None:
    """matplotlib is the `reports` extra: without it --html is one line saying what to install,
    before any work is done."""
    without = (
        "import sys; sys.modules['matplotlib'] = None; "  # what an install without it finds
        "from mlserve.cli.main import run; "
        "sys.exit(run(['drift', 'churn', '--html', 'never.html']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", without],
        cwd=drift_project.folder,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert_one_line_error(result, 6, "matplotlib", "pip install 'mlserve[reports]'")
    assert not (drift_project.folder / "never.html").exists()
