"""`mlserve drift`: compare a version's logged window with its reference, as a table and HTML."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import JustifyMethod
from rich.table import Table

from mlserve.cli.context import console, context, err_console
from mlserve.errors import ConfigError, InvalidInput, NotFound
from mlserve.types import ModelRef

if TYPE_CHECKING:
    from mlserve.monitoring.drift import DriftCheck, DriftReport


EXIT_DRIFT_DETECTED = 9
"""Exit code of a check that found drift, so a scheduled job or CI step can gate on it."""


def drift(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS.")],
    window: Annotated[
        str | None,
        typer.Option(help="How far back to look: 30m, 1h, 2d… (default: drift_window_s)."),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report here.")
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option(help="Significance level after the Holm correction (default: drift_alpha)."),
    ] = None,
    min_rows: Annotated[
        int | None,
        typer.Option(help="Fewest logged rows before drift is judged (default: drift_min_rows)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Test whether a version's recent inputs and predictions drifted from its training data.

    Numeric features: Kolmogorov-Smirnov. Categorical ones: chi-square and PSI.

    Predictions are compared with the model's predictions on its reference sample.

    Exits 9 when drift is detected (0 when not, or too few rows to judge).

    Example: [bold]mlserve drift churn@production --window 6h --html drift.html[/bold]
    """
    # Imported here: pandas, scipy and matplotlib take a while; other commands need not.
    from mlserve.monitoring.drift import (
        WINDOW_ROW_LIMIT,
        DriftCheck,
        DriftConfig,
        Reference,
        detect_drift,
        prediction_kind,
    )
    from mlserve.monitoring.durations import format_duration, parse_duration
    from mlserve.monitoring.predlog import PredictionLogStore
    from mlserve.monitoring.predlog_store import safe_url, sqlite_path
    from mlserve.runtimes import load_runtime

    if html is not None and importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(
            "--html draws its plots with matplotlib, which is not installed: "
            "pip install 'mlserve[reports]'"
        )
    cli = context(ctx)
    settings = cli.settings()
    window_s = parse_duration(window) if window is not None else settings.drift_window_s
    config = DriftConfig(
        alpha=settings.drift_alpha if alpha is None else alpha,
        min_rows=settings.drift_min_rows if min_rows is None else min_rows,
    )
    if not 0 < config.alpha < 1:
        raise InvalidInput(f"--alpha must be between 0 and 1, got {config.alpha:g}")
    if config.min_rows < 1:
        raise InvalidInput(f"--min-rows must be at least 1, got {config.min_rows}")

    store = cli.store()
    version = store.resolve(ModelRef.parse(ref))
    label = f"{version.name}:{version.version}"
    if not version.reference_profile:
        raise NotFound(
            f"{label} has no reference profile to compare with "
            "(train it with mlserve train, or register it with --signature-from DATA)"
        )
    log_url = settings.resolved_prediction_log_url
    log_file = sqlite_path(log_url)
    if log_file is not None and not log_file.is_file():
        raise NotFound(f"no prediction log at {log_file}: has a server logged predictions here?")

    runtime = load_runtime(
        store.local_folder(version), expected_sha256=version.sha256, safe=settings.safe_loading
    )
    reference = Reference.from_profile(version.reference_profile)
    batch = reference.batch_for(runtime.signature)
    if batch is not None:
        reference = reference.with_predictions(
            runtime.predict(batch), prediction_kind(runtime.signature)
        )

    until = datetime.now(UTC)
    since = until - timedelta(seconds=window_s)
    log_store = PredictionLogStore(log_url)
    try:
        logged = log_store.read_window(
            version.name, str(version.version), since, until, limit=WINDOW_ROW_LIMIT
        )
    finally:
        log_store.close()
    if len(logged.inputs) == 0:
        raise NotFound(
            f"no predictions of {label} logged in the last {format_duration(window_s)} "
            f"(prediction log: {safe_url(log_url)})"
        )

    check = DriftCheck(
        model=version.name,
        version=str(version.version),
        reference=reference,
        inputs=logged.inputs,
        predictions=logged.predictions,
        since=since,
        until=until,
    )
    report = detect_drift(check, config)
    _show(report, check, format_duration(window_s), as_json=as_json, html=html)
    if report.detected:
        raise typer.Exit(EXIT_DRIFT_DETECTED)


def _show(
    report: DriftReport, check: DriftCheck, window: str, *, as_json: bool, html: Path | None
) -> None:
    """The report as a table or JSON on standard output, and as an HTML file when asked."""
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        _print_report(report, window)
    if html is not None:
        from mlserve.monitoring.drift_report import render_html

        html.write_text(render_html(report, check), encoding="utf-8")
        err_console.print(f"wrote the drift report to {html}", highlight=False)


def _print_report(report: DriftReport, window: str) -> None:
    """A headline and one table row per feature, drifted ones in red."""
    from mlserve.monitoring.drift import PREDICTION

    headline = (
        f"[bold]{report.model}:{report.version}[/bold]  {report.window_rows:,} rows in the last "
        f"{window} against {report.reference_rows:,} reference rows  alpha={report.alpha:g} (Holm)"
    )
    console.print(headline, highlight=False)
    if report.status == "insufficient data":
        console.print(
            f"[yellow]insufficient data[/yellow]: at least {report.min_rows:,} rows are needed "
            "before drift is judged",
            highlight=False,
        )
        return
    tested = [f for f in report.inputs if f.is_tested]
    drifted = [f for f in tested if f.drifted]
    prediction = report.prediction
    verdict = (
        f"[red bold]drift detected[/red bold]: {len(drifted)} of {len(tested)} features"
        + (", and the predictions" if prediction is not None and prediction.drifted else "")
        if report.detected
        else f"[green]no drift[/green] in {len(tested)} features"
        + (" or the predictions" if prediction is not None else "")
    )
    console.print(verdict, highlight=False)
    table = Table(title=f"drift of {report.model}:{report.version}")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("feature", "left"),
        ("kind", "left"),
        ("method", "left"),
        ("statistic (D / PSI)", "right"),
        ("p-value", "right"),
        ("corrected p", "right"),
        ("drifted", "left"),
    )
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for feature in report.features:
        name = "(predictions)" if feature.name == PREDICTION else feature.name
        if not feature.is_tested:
            table.add_row(name, feature.kind, "skipped", "-", "-", "-", feature.note)
            continue
        table.add_row(
            name,
            feature.kind,
            "KS" if feature.method == "ks" else "chi2 + PSI",
            f"{feature.statistic:.3f}" if feature.statistic is not None else "-",
            _p(feature.p_value),
            _p(feature.corrected_p_value),
            "[red bold]yes[/red bold]" if feature.drifted else "no",
            style="red" if feature.drifted else None,
        )
    console.print(table)


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1e}" if 0 < value < 1e-3 else f"{value:.3f}"
