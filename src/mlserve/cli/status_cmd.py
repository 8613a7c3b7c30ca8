"""`mlserve status`: the registry at a glance, and the server's health when one answers."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from mlserve.cli.context import console, context
from mlserve.types import DEFAULT_ALIAS

KEY_METRICS = ("accuracy", "f1", "roc_auc", "rmse", "r2")


def status(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option(
            help="Server URL to ask for health (default: http://HOST:PORT from settings)."
        ),
    ] = None,
) -> None:
    """Show models, versions, aliases and key metrics, and the server's health if it is up.

    Example: [bold]mlserve status --server http://127.0.0.1:8080[/bold]
    """
    cli = context(ctx)
    settings = cli.settings()
    store = cli.store()
    health = _server_health(server or f"http://{settings.host}:{settings.port}", settings.api_keys)
    table = Table(title="mlserve status")
    for column in ("model", "versions", "latest", "aliases", "production metrics", "served"):
        table.add_column(column)
    for info in store.list_models():
        metrics = ""
        if info.latest_version is not None:
            version = store.resolve(info.name)
            metrics = ", ".join(
                f"{k}={version.metrics[k]:.3f}" for k in KEY_METRICS if k in version.metrics
            )
            if DEFAULT_ALIAS not in info.aliases:
                metrics = f"(latest) {metrics}"
        served = health["models"].get(info.name, "-") if health["up"] else "-"
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


def _server_health(url: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """Ask a running server for readiness and its models; never raises."""
    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
    try:
        with httpx.Client(base_url=url, timeout=1.0, headers=headers) as client:
            ready = client.get("/v2/health/ready")
            models: dict[str, str] = {}
            listing = client.get("/v1/models")
            if listing.status_code == 200:
                for model in listing.json().get("models", []):
                    state = (
                        "ready" if model.get("ready") else f"not ready: {model.get('reason', '?')}"
                    )
                    models[model["name"]] = f"v{model.get('version', '?')} {state}"
    except httpx.HTTPError:
        return {"up": False, "summary": f"not reachable at {url}", "models": {}}
    summary = f"{url} {'ready' if ready.status_code == 200 else 'not ready'}"
    return {"up": True, "summary": summary, "models": models}
