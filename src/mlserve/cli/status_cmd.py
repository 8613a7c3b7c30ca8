"""`mlserve status`: the registry at a glance; when a server answers, its health and each served
version's traffic, errors, latency, drift and online accuracy, read from its /metrics."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from mlserve.cli.context import console, context
from mlserve.types import DEFAULT_ALIAS

if TYPE_CHECKING:  # imported where used: a command's import should not pay for every other's
    import httpx

    from mlserve.cli.live_metrics import Scrape, VersionStatus
    from mlserve.registry import ModelInfo

KEY_METRICS = ("accuracy", "f1", "roc_auc", "rmse", "r2")
MISSING = "–"
"""Shown for a value the server does not have (yet): no drift check, no feedback, no requests."""
MAX_FOLLOW_WAIT_S = 10.0
"""Longest wait for a server to follow a moved alias before status flags the difference."""
SHOWN_DRIFTED = 3
"""Drifted features named in the drift cell; the rest are counted."""


def status(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option(
            help="Server URL to ask for health (default: http://HOST:PORT from settings)."
        ),
    ] = None,
    rate_window: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=60.0,
            help="Seconds between the two /metrics scrapes that give req/s (0: skip the rate).",
        ),
    ] = 1.0,
) -> None:
    """Show models, versions, aliases and key metrics; when the server is up, also each served
    version's traffic, error rate, p95 latency, drift and online accuracy from its /metrics.

    Example: [bold]mlserve status --server http://127.0.0.1:8080[/bold]
    """
    cli = context(ctx)
    settings = cli.settings()
    store = cli.store()
    url = server or f"http://{settings.host}:{settings.port}"
    health = _server_health(url, settings.api_keys)
    infos = store.list_models()
    lagging = _lagging(infos, health)
    if lagging and health["up"]:
        # A server follows its aliases every reload interval: only a difference that outlasts
        # one is worth a flag, so look again after one.
        time.sleep(min(settings.reload_interval_s, MAX_FOLLOW_WAIT_S) + 0.5)
        health = _server_health(url, settings.api_keys)
        infos = store.list_models()
        lagging = _lagging(infos, health)
    table = Table(title="mlserve status")
    for column in ("model", "versions", "latest", "aliases", "production metrics", "served"):
        table.add_column(column)
    for info in infos:
        metrics = ""
        if info.latest_version is not None:
            version = store.resolve(info.name)
            metrics = ", ".join(
                f"{k}={version.metrics[k]:.3f}" for k in KEY_METRICS if k in version.metrics
            )
            if DEFAULT_ALIAS not in info.aliases:
                metrics = f"(latest) {metrics}"
        served = health["models"].get(info.name, "-") if health["up"] else "-"
        if info.name in lagging:
            served += f" ⚠ {lagging[info.name]}"
        table.add_row(
            info.name,
            str(info.version_count),
            str(info.latest_version or "-"),
            ", ".join(f"{a}→{v}" for a, v in info.aliases.items()) or "-",
            metrics or "-",
            served,
        )
    console.print(table)
    console.print(f"registry: {store.database_url}", highlight=False)
    console.print(f"server: {health['summary']}", highlight=False)
    if health["up"]:
        _print_live(url, settings.api_keys, rate_window, health["reasons"])


def _print_live(
    url: str, keys: tuple[str, ...], rate_window_s: float, reasons: dict[str, str]
) -> None:
    """The live table from two /metrics scrapes ``rate_window_s`` apart; one line if it fails."""
    import httpx

    from mlserve.cli.live_metrics import requests_per_second, version_statuses

    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
    try:
        with httpx.Client(base_url=url, timeout=5.0, headers=headers) as client:
            first = _scrape(client)
            rates = None
            latest = first
            if rate_window_s > 0:
                time.sleep(rate_window_s)
                latest = _scrape(client)
                rates = requests_per_second(first, latest)
    except httpx.HTTPStatusError as error:
        console.print(
            f"server metrics: not available (/metrics answered {error.response.status_code})",
            highlight=False,
        )
        return
    except (httpx.HTTPError, ValueError) as error:  # gone meanwhile, or not an exposition
        console.print(f"server metrics: not available ({error})", highlight=False)
        return
    statuses = version_statuses(latest)
    if not statuses:
        console.print("server metrics: no model is served", highlight=False)
        return
    rate_column = f"req/s ({rate_window_s:g} s)" if rates is not None else "req/s"
    table = Table(title="served models (live)")
    for column in ("model", "version", "state", "requests", rate_column, "errors", "p95"):
        table.add_column(column, justify="left" if column in ("model", "state") else "right")
    for column in ("drift", "online", "labelled"):
        table.add_column(column, justify="right" if column == "labelled" else "left")
    for entry in statuses:
        rate = None if rates is None else rates.get((entry.model, entry.version), 0.0)
        table.add_row(*_live_cells(entry, rate, reasons.get(entry.model)))
    console.print(table)
    console.print(
        "requests, errors and p95 since the server started; drift from the last drift check; "
        "online scores over the feedback window.",
        highlight=False,
    )


def _live_cells(entry: VersionStatus, rate: float | None, reason: str | None) -> list[str]:
    """One row of the live table; MISSING for every value the server does not have."""
    state = MISSING if entry.ready is None else ("ready" if entry.ready else "not ready")
    if entry.ready is False and reason:
        state = f"not ready: {reason}"
    errors = MISSING
    if entry.error_rate is not None:
        errors = f"{entry.errors:.0f} ({entry.error_rate:.1%})"
    p95 = MISSING if entry.p95_s is None else f"{entry.p95_s * 1000:.1f} ms"
    drift = MISSING
    if entry.drift_share is None and entry.drift_window_rows is not None:
        drift = f"{MISSING} ({entry.drift_window_rows:.0f} rows)"  # checked, too few rows
    elif entry.drift_share is not None:
        drift = f"{entry.drift_share:.0%}"
        if entry.drifted:
            shown = ", ".join(entry.drifted[:SHOWN_DRIFTED])
            more = len(entry.drifted) - SHOWN_DRIFTED
            drift += f" ({shown}{f' +{more} more' if more > 0 else ''})"
    online = MISSING
    if entry.accuracy is not None:
        online = f"accuracy {entry.accuracy:.3f}"
    elif entry.mae is not None:
        online = f"MAE {entry.mae:.4g}"
    labelled = MISSING if entry.labelled_rows is None else f"{entry.labelled_rows:.0f}"
    return [
        entry.model,
        entry.version or MISSING,
        state,
        f"{entry.requests:.0f}",
        MISSING if rate is None else f"{rate:.1f}",
        errors,
        p95,
        drift,
        online,
        labelled,
    ]


def _scrape(client: httpx.Client) -> Scrape:
    """GET /metrics, parsed; raises httpx.HTTPStatusError when the server refuses."""
    from mlserve.cli.live_metrics import Scrape

    response = client.get("/metrics")
    response.raise_for_status()
    return Scrape.parse(response.text, time.monotonic())


def _lagging(infos: list[ModelInfo], health: dict[str, Any]) -> dict[str, str]:
    """Models whose production alias points at another version than the server answers with,
    or with an alias whose version the server does not serve (it serves every aliased one)."""
    lagging: dict[str, str] = {}
    for info in infos:
        answering = health["answering"].get(info.name)
        if answering is None:
            continue  # not served by this server
        problems = []
        target = info.aliases.get(DEFAULT_ALIAS)
        if target is not None and str(target) != answering:
            problems.append(f"{DEFAULT_ALIAS}→{target} but the server answers with v{answering}")
        ready = health["ready_versions"].get(info.name, set())
        problems += [
            f"{alias}→{version} is not served"
            for alias, version in info.aliases.items()
            if str(version) not in ready and alias != DEFAULT_ALIAS
        ]
        if problems:
            lagging[info.name] = "; ".join(problems)
    return lagging


def _server_health(url: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """Ask a running server for readiness and its models; never raises."""
    import httpx

    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
    try:
        with httpx.Client(base_url=url, timeout=1.0, headers=headers) as client:
            ready = client.get("/v2/health/ready")
            served: dict[str, list[str]] = {}
            reasons: dict[str, str] = {}
            answering: dict[str, str] = {}
            ready_versions: dict[str, set[str]] = {}
            listing = client.get("/v1/models")
            if listing.status_code == 200:
                for model in listing.json().get("models", []):
                    name, version = model["name"], str(model.get("version", "?"))
                    state = (
                        "ready" if model.get("ready") else f"not ready: {model.get('reason', '?')}"
                    )
                    if model.get("ready"):
                        ready_versions.setdefault(name, set()).add(version)
                    if model.get("default"):
                        answering[name] = version
                        state += " (answers)"
                    served.setdefault(name, []).append(f"v{version} {state}")
                    if model.get("reason"):
                        reasons[name] = str(model["reason"])
    except httpx.HTTPError:
        return {
            "up": False,
            "summary": f"not reachable at {url}",
            "models": {},
            "reasons": {},
            "answering": {},
            "ready_versions": {},
        }
    summary = f"{url} {'ready' if ready.status_code == 200 else 'not ready'}"
    models = {name: "; ".join(entries) for name, entries in served.items()}
    return {
        "up": True,
        "summary": summary,
        "models": models,
        "reasons": reasons,
        "answering": answering,
        "ready_versions": ready_versions,
    }
