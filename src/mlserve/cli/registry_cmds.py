"""`mlserve register`, `models`, `alias` and `runs`: the registry from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from mlserve.cli.context import actor, console, context
from mlserve.errors import InvalidInput
from mlserve.types import ModelRef

if TYPE_CHECKING:
    from mlserve.registry import ModelVersion

models_app = typer.Typer(
    help="List and inspect registered models.\n\n"
    "Example: [bold]mlserve models show churn@production[/bold]",
    no_args_is_help=True,
)
alias_app = typer.Typer(
    help="Move and delete aliases (production, staging, …).\n\n"
    "Example: [bold]mlserve alias set churn production 3[/bold]",
    no_args_is_help=True,
)
runs_app = typer.Typer(
    help="Compare training runs.\n\nExample: [bold]mlserve runs list churn[/bold]",
    no_args_is_help=True,
)


def register(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(
            help="Model file (.joblib, .pkl, .skops, XGBoost .json/.ubj, LightGBM .txt, .onnx) "
            "or folder (an MLflow model, a custom Python model)."
        ),
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name.")],
    framework: Annotated[
        str | None,
        typer.Option(
            help="sklearn, xgboost, lightgbm, onnx, mlflow or python; judged from the file "
            "when left out."
        ),
    ] = None,
    signature_from: Annotated[
        Path | None,
        typer.Option(
            help="Data whose columns give the feature names and dtypes, and whose "
            "rows give the reference profile (CSV, Parquet or JSON)."
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Target column to leave out of --signature-from data.")
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    description: Annotated[str, typer.Option(help="A note stored with the version.")] = "",
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE tag (repeatable).")] = None,
    metric: Annotated[
        list[str] | None, typer.Option(help="NAME=NUMBER metric (repeatable).")
    ] = None,
) -> None:
    """Register a trained model file as the next version of NAME.

    Without --signature-from, feature names come from the model (feature_names_in_, the
    booster's feature names, the ONNX inputs, the MLflow signature), else f0..f{n-1}.

    Example: [bold]mlserve register model.joblib --name churn --signature-from train.csv
    --target churned --alias staging[/bold]
    """
    # Imported here: scikit-learn and pandas take a second to import; listing models need not.
    from mlserve.training.registration import Registration, register_model

    settings = context(ctx).settings()
    request = Registration(
        name=name,
        framework=framework,
        signature_from=signature_from,
        target=target,
        alias=alias,
        description=description,
        tags=_pairs(tag, str, "--tag"),
        metrics=_pairs(metric, float, "--metric"),
    )
    store = context(ctx).store()
    version = register_model(store, path, request, safe=settings.safe_loading, actor=actor())
    console.print(
        f"Registered [bold]{name}:{version.version}[/bold]"
        f"{f' as {alias}' if alias else ''} ({version.framework}, "
        f"{len(version.signature.inputs)} features).",
        highlight=False,
    )


@models_app.command("list")
def models_list(ctx: typer.Context) -> None:
    """List every model with its latest version and aliases.

    Example: [bold]mlserve models list[/bold]
    """
    infos = context(ctx).store().list_models()
    table = Table(title="models")
    for column in ("name", "versions", "latest", "aliases", "created"):
        table.add_column(column)
    for info in infos:
        aliases = ", ".join(f"{a}→{v}" for a, v in info.aliases.items())
        table.add_row(
            info.name,
            str(info.version_count),
            str(info.latest_version or "-"),
            aliases or "-",
            info.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(
        table if infos else "No models registered yet. Try: mlserve train DATA --target COL"
    )


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show one version: signature, metrics, params, aliases and the alias history.

    Example: [bold]mlserve models show churn@production[/bold]
    """
    store = context(ctx).store()
    version = store.resolve(ModelRef.parse(ref))
    history = store.alias_history(version.name)
    if as_json:
        console.print_json(json.dumps(_version_json(version, history), default=str))
        return
    console.print(
        f"[bold]{version.name}:{version.version}[/bold]  framework={version.framework}  "
        f"task={version.signature.task}  created {version.created_at:%Y-%m-%d %H:%M} "
        f"by {version.created_by or '?'}",
        highlight=False,
    )
    console.print(f"aliases: {', '.join(version.aliases) or '-'}   sha256: {version.sha256}")
    console.print(f"artifact: {version.artifact_uri}", highlight=False)
    if version.description:
        console.print(f"description: {version.description}", highlight=False)
    features = Table(title="signature")
    for column in ("feature", "dtype", "kind", "categories"):
        features.add_column(column)
    for feature in version.signature.inputs:
        shown = ", ".join(feature.categories[:6]) + (" …" if len(feature.categories) > 6 else "")
        features.add_row(feature.name, feature.dtype, feature.kind, shown)
    console.print(features)
    if version.signature.classes:
        console.print(f"classes: {', '.join(map(str, version.signature.classes))}", highlight=False)
    if version.metrics:
        console.print("metrics: " + ", ".join(f"{k}={_fmt(v)}" for k, v in version.metrics.items()))
    if history:
        trail = Table(title="alias history")
        for column in ("when", "alias", "from", "to", "who"):
            trail.add_column(column)
        for event in history:
            trail.add_row(
                f"{event.at:%Y-%m-%d %H:%M:%S}",
                event.alias,
                str(event.from_version or "-"),
                str(event.to_version or "deleted"),
                event.actor,
            )
        console.print(trail)


@models_app.command("archive")
def models_archive(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME:VERSION.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
) -> None:
    """Take a version out of use: kept with its artifacts and history, never served again.

    Refused while an alias or an active rollout uses it. Recorded in `mlserve models history`.

    Example: [bold]mlserve models archive churn:2 --reason "trained on the wrong month"[/bold]
    """
    name, version = _numbered(ref)
    context(ctx).store().archive_version(name, version, actor=actor(), reason=reason)
    console.print(f"archived {name}:{version}", highlight=False)


@models_app.command("delete")
def models_delete(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME:VERSION.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a version that was never served, with its artifacts; its number is not reused.

    A version an alias ever pointed at, or a rollout used, can only be archived.
    Recorded in `mlserve models history`.

    Example: [bold]mlserve models delete churn:4 --yes[/bold]
    """
    name, version = _numbered(ref)
    if not yes:
        if not sys.stdin.isatty():
            raise InvalidInput("deleting a version needs --yes when not asked on a terminal")
        typer.confirm(f"delete {name}:{version} and its artifacts for good?", abort=True)
    context(ctx).store().delete_version(name, version, actor=actor())
    console.print(f"deleted {name}:{version}", highlight=False)


@models_app.command("history")
def models_history(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="Model name.")]
) -> None:
    """Show which versions of NAME were archived or deleted, by whom, when and why.

    Example: [bold]mlserve models history churn[/bold]
    """
    table = Table(title=f"{name}: version history")
    for column in ("when", "version", "action", "who", "reason"):
        table.add_column(column)
    for event in context(ctx).store().version_events(name):
        table.add_row(
            f"{event.at:%Y-%m-%d %H:%M:%S}",
            str(event.version),
            event.action,
            event.actor,
            event.reason,
        )
    console.print(table)


def _numbered(ref: str) -> tuple[str, int]:
    """NAME and VERSION of a NAME:VERSION reference; an alias or a bare name is refused."""
    parsed = ModelRef.parse(ref)
    if parsed.version is None:
        raise InvalidInput(f"name the version: NAME:VERSION, not {ref!r}")
    return parsed.name, parsed.version


@alias_app.command("set")
def alias_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias, e.g. production.")],
    version: Annotated[int, typer.Argument(help="Version number to point at.")],
) -> None:
    """Point ALIAS of model NAME at VERSION (atomically; recorded in the audit trail).

    Example: [bold]mlserve alias set churn production 3[/bold]
    """
    event = context(ctx).store().set_alias(name, alias, version, actor=actor())
    before = f" (was {event.from_version})" if event.from_version else ""
    console.print(f"{name}@{alias} → {version}{before}", highlight=False)


@alias_app.command("delete")
def alias_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias to remove.")],
) -> None:
    """Remove ALIAS from model NAME (recorded in the audit trail).

    Example: [bold]mlserve alias delete churn staging[/bold]
    """
    event = context(ctx).store().delete_alias(name, alias, actor=actor())
    console.print(f"deleted {name}@{alias} (was {event.from_version})", highlight=False)


@alias_app.command("history")
def alias_history(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="Model name.")]
) -> None:
    """Show who moved which alias of NAME, when, and from which version to which.

    Example: [bold]mlserve alias history churn[/bold]
    """
    table = Table(title=f"{name}: alias history")
    for column in ("when", "alias", "from", "to", "who"):
        table.add_column(column)
    for event in context(ctx).store().alias_history(name):
        table.add_row(
            f"{event.at:%Y-%m-%d %H:%M:%S}",
            event.alias,
            str(event.from_version or "-"),
            str(event.to_version or "deleted"),
            event.actor,
        )
    console.print(table)


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only this model's runs.")] = None,
    limit: Annotated[int, typer.Option(help="Most runs shown, newest first.")] = 6,
) -> None:
    """Compare training runs side by side: version, estimator, metrics, data, duration, commit.

    Example: [bold]mlserve runs list churn[/bold]
    """
    runs = context(ctx).store().list_runs(name)[:limit]
    if not runs:
        console.print("No training runs recorded yet.")
        return
    metric_names = sorted({m for run in runs for m in run.metrics})
    # Runs are columns and fields rows, so runs read side by side however many metrics exist.
    table = Table(title="training runs")
    table.add_column("")
    for run in runs:
        table.add_column(f"run {run.id}", justify="right")
    fields: list[tuple[str, list[str]]] = [
        ("model", [r.name for r in runs]),
        ("version", [str(r.version or "-") for r in runs]),
        ("estimator", [r.estimator for r in runs]),
        ("task", [r.task for r in runs]),
        *((m, [_fmt(r.metrics.get(m)) for r in runs]) for m in metric_names),
        *((f"baseline {m}", [_fmt(r.baseline_metrics.get(m)) for r in runs]) for m in metric_names),
        ("rows (train+test)", [f"{r.rows_train}+{r.rows_test}" for r in runs]),
        ("data", [(r.data_fingerprint or "-").removeprefix("sha256:")[:12] for r in runs]),
        ("duration", [f"{r.duration_s:.1f}s" for r in runs]),
        ("git commit", [(r.git_commit or "-")[:10] for r in runs]),
        ("started", [f"{r.started_at:%Y-%m-%d %H:%M}" for r in runs]),
    ]
    for label, values in fields:
        table.add_row(label, *values)
    console.print(table)


def _version_json(version: ModelVersion, history: list[Any]) -> dict[str, Any]:
    return {
        "name": version.name,
        "version": version.version,
        "framework": version.framework,
        "aliases": list(version.aliases),
        "artifact_uri": version.artifact_uri,
        "sha256": version.sha256,
        "signature": version.signature.to_dict(),
        "metrics": version.metrics,
        "params": version.params,
        "tags": version.tags,
        "description": version.description,
        "data_fingerprint": version.data_fingerprint,
        "created_at": version.created_at.isoformat(),
        "created_by": version.created_by,
        "alias_history": [
            {
                "alias": e.alias,
                "from": e.from_version,
                "to": e.to_version,
                "actor": e.actor,
                "at": e.at,
            }
            for e in history
        ],
    }


def _pairs(items: list[str] | None, cast: Any, flag: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            result[key] = cast(value)
        except ValueError:
            raise InvalidInput(f"{flag} {key}: {value!r} is not a number") from None
    return result


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
