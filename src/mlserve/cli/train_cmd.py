"""`mlserve train`: validate a dataset, train a baseline, compare, register."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from mlserve.cli.context import console, context, err_console
from mlserve.errors import InvalidInput

if TYPE_CHECKING:
    from mlserve.training import TrainResult

ESTIMATOR_HELP = (
    "logistic_regression, random_forest, gradient_boosting or knn for classification; "
    "linear_regression, ridge, random_forest, gradient_boosting or knn for regression. "
    "Default: logistic_regression or ridge."
)


def train(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="Training data: CSV, Parquet or JSON.")],
    target: Annotated[str, typer.Option("--target", "-t", help="Column to predict.")],
    name: Annotated[str | None, typer.Option(help="Model name (default: the file's stem).")] = None,
    estimator: Annotated[
        str | None,
        typer.Option(help=ESTIMATOR_HELP),
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="classification or regression (default: inferred).")
    ] = None,
    test_size: Annotated[float, typer.Option(help="Share of rows held out for testing.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed for the split and the estimator.")] = 0,
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    drop: Annotated[
        list[str] | None, typer.Option(help="Column to leave out (repeatable).")
    ] = None,
    model_format: Annotated[
        str, typer.Option("--format", help="joblib, or skops for safe loading.")
    ] = "joblib",
    description: Annotated[str, typer.Option(help="A note stored with the version.")] = "",
    require_better: Annotated[
        bool | None,
        typer.Option(
            "--require-better/--allow-worse",
            help="Refuse to register a model that does not beat the trivial baseline "
            "(default: the train_require_better setting, off).",
        ),
    ] = None,
) -> None:
    """Train a scikit-learn baseline on DATA, compare it with a trivial model, and register it.

    It warns about columns that look like row identifiers, and says plainly when the model does
    not beat the trivial baseline (majority class or mean) on accuracy or RMSE;
    --require-better then refuses to register it (exit 4). A model name keeps one target.

    Example: [bold]mlserve train data/churn.csv --target churned --estimator random_forest
    --alias staging[/bold]
    """
    # Imported here: scikit-learn takes a second to import, which other commands need not pay.
    from mlserve.training import ALL_ESTIMATORS, TrainRequest
    from mlserve.training import train as run_training

    if task not in (None, "classification", "regression"):
        raise InvalidInput(f"--task must be classification or regression, got {task!r}")
    if model_format not in ("joblib", "skops"):
        raise InvalidInput(f"--format must be joblib or skops, got {model_format!r}")
    if estimator is not None and estimator not in ALL_ESTIMATORS:
        raise InvalidInput(
            f"unknown estimator {estimator!r}; choose one of: {', '.join(ALL_ESTIMATORS)}"
        )
    fmt: Literal["joblib", "skops"] = "skops" if model_format == "skops" else "joblib"
    cli = context(ctx)
    request = TrainRequest(
        data=data,
        target=target,
        name=name,
        estimator=estimator,
        task=task,  # type: ignore[arg-type]  # checked above
        test_size=test_size,
        seed=seed,
        alias=alias,
        drop=tuple(drop or ()),
        model_format=fmt,
        description=description,
        require_better=(
            cli.settings().train_require_better if require_better is None else require_better
        ),
    )
    store = cli.store()
    with err_console.status("training") as status:
        result = run_training(store, request, on_step=status.update)
    _print_summary(result)


def _print_summary(result: TrainResult) -> None:
    from mlserve.training.evaluate import DECIDING_METRIC, is_better

    for problem in result.report.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {problem.message}", highlight=False)
    version = result.version
    table = Table(
        title=f"{version.name}:{version.version}  ({result.report.task}, "
        f"{version.params.get('estimator')})"
    )
    table.add_column("metric")
    table.add_column("model", justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("", justify="left")
    for metric, value in result.metrics.items():
        base = result.baseline_metrics.get(metric)
        better = base is None or is_better(metric, value, base)
        table.add_row(
            metric,
            f"{value:.4f}",
            "-" if base is None else f"{base:.4f}",
            "[green]better[/green]" if better else "[red]not better[/red]",
        )
    console.print(table)
    if not result.beats_baseline:
        metric = DECIDING_METRIC[result.report.task or "classification"]
        err_console.print(
            f"[yellow]warning:[/yellow] this model does not beat the trivial baseline on {metric} "
            f"({result.metrics[metric]:.4f} against {result.baseline_metrics[metric]:.4f}): "
            f"is {version.signature.target!r} the right target? It is registered anyway "
            "(--require-better refuses such a model).",
            highlight=False,
        )
    aliases = f" as {', '.join(version.aliases)}" if version.aliases else ""
    console.print(
        f"Registered [bold]{version.name}:{version.version}[/bold]{aliases} "
        f"({result.rows_train} training rows, {result.rows_test} test rows, "
        f"{result.duration_s:.1f}s).",
        highlight=False,
    )
