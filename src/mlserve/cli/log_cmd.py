"""`mlserve log export`: what the server logged, as a Parquet or CSV file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlserve.cli.context import context, err_console
from mlserve.errors import InvalidInput, NotFound
from mlserve.types import ModelRef

if TYPE_CHECKING:
    import pandas as pd

log_app = typer.Typer(
    help="The prediction log: every prediction the server made, with inputs and latency.\n\n"
    "Example: [bold]mlserve log export churn --since 24h -o last-day.parquet[/bold]",
    no_args_is_help=True,
)

EXPORT_FORMATS = ("parquet", "csv")


def parse_time(text: str, option: str, now: datetime) -> datetime:
    """An ISO 8601 time (UTC when it names no zone) or a duration before ``now`` (90s, 15m,
    1h, 7d, 1h30m). Raises InvalidInput naming ``option``."""
    # Imported here: the monitoring package pulls in pandas; other commands need not.
    from mlserve.monitoring.durations import parse_duration

    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            return now - timedelta(seconds=parse_duration(text))
        except InvalidInput:
            raise InvalidInput(
                f"{option}: expected an ISO 8601 time (2026-05-01T12:00) or a duration "
                f"such as 30m, 1h or 7d; got {text!r}"
            ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@log_app.command("export")
def export(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    output_format: Annotated[
        str | None,
        typer.Option("--format", help="parquet or csv (default: from the --output suffix)."),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="From this time (ISO 8601) or this long ago (1h, 7d).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Up to (not including) this time or this long ago.")
    ] = None,
    route: Annotated[
        str | None,
        typer.Option(
            help="Only what answered this way: production, canary, sticky, explicit, fallback "
            "or shadow (a rollout's mirrored requests)."
        ),
    ] = None,
) -> None:
    """Export the logged predictions of the version REF names to Parquet or CSV.

    One row per predicted row: ts, request_id, row, model, version, every logged feature,
    prediction, proba_CLASS, latency_ms, unknown_categories (the features whose category
    training never saw in that row, comma-separated; empty for most rows) and route (why this
    version answered).

    Example: [bold]mlserve log export churn@production --since 24h -o last-day.parquet[/bold]
    """
    fmt = (output_format or output.suffix.lstrip(".")).lower()
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"unknown export format {fmt!r}; use --format parquet or csv")
    now = datetime.now(UTC)
    start = parse_time(since, "--since", now) if since else None
    end = parse_time(until, "--until", now) if until else None
    if start is not None and end is not None and end <= start:
        raise InvalidInput("--until must be later than --since")

    # Imported here: pandas and SQLAlchemy take a second to import; other commands need not.
    from mlserve.monitoring.predlog import PredictionLogStore
    from mlserve.monitoring.predlog_store import ROUTE, ROUTES, safe_url, sqlite_path

    if route is not None and route not in ROUTES:
        raise InvalidInput(f"unknown route {route!r}; use one of: {', '.join(ROUTES)}")

    cli = context(ctx)
    settings = cli.settings()
    version = cli.store().resolve(ModelRef.parse(ref))
    url = settings.resolved_prediction_log_url
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise NotFound(f"no prediction log at {path}: nothing was served with it yet")
    store = PredictionLogStore(url)
    try:
        frame = store.export(
            version.name, str(version.version), start, end, classes=version.signature.classes
        )
    finally:
        store.close()
    if route is not None:
        frame = frame[frame[ROUTE] == route].reset_index(drop=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        _text_where_mixed(frame).to_parquet(output, index=False)
    else:
        frame.to_csv(output, index=False)
    err_console.print(
        f"wrote {len(frame)} records of {version.name}:{version.version} "
        f"from {safe_url(url)} to {output}",
        highlight=False,
        soft_wrap=True,
    )


def _text_where_mixed(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns holding values of several types (a feature sent as 3 and as "3") become text,
    which Parquet needs; missing values stay missing."""
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        kinds = {type(v) for v in frame[column] if v is not None}
        if len(kinds) > 1:
            frame[column] = [None if v is None else str(v) for v in frame[column]]
    return frame
