"""`mlserve import`: register an MLflow model from a folder or an MLflow URI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlserve.cli.context import actor, console, context


def import_model(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(
            metavar="PATH_OR_URI",
            help="An MLflow model folder (with an MLmodel file) or an MLflow URI such as "
            "models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH.",
        ),
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name.")],
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    signature_from: Annotated[
        Path | None,
        typer.Option(
            help="Data whose columns give the features' dtypes and categories, and whose rows "
            "give the reference profile (CSV, Parquet or JSON); the MLmodel signature still "
            "names the features."
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Target column to leave out of --signature-from data.")
    ] = None,
    description: Annotated[str, typer.Option(help="A note stored with the version.")] = "",
) -> None:
    """Register an MLflow model as the next version of NAME.

    scikit-learn, XGBoost and LightGBM flavours are served by mlserve's own runtimes; any
    other flavour through MLflow's pyfunc loader. The MLmodel signature becomes the model's
    signature, and its input example (when there is no --signature-from data) the reference
    profile. URIs are fetched from the tracking server MLflow is configured for
    (MLFLOW_TRACKING_URI). Needs the mlflow extra: pip install 'mlserve[mlflow]'.

    Example: [bold]mlserve import models:/churn/3 --name churn --alias staging[/bold]
    """
    # Imported here: MLflow and scikit-learn take seconds to import; other commands need not.
    from mlserve.training.mlflow_import import MlflowImport, import_mlflow_model

    cli = context(ctx)
    settings = cli.settings()
    request = MlflowImport(
        source=source,
        name=name,
        alias=alias,
        signature_from=signature_from,
        target=target,
        description=description,
    )
    imported = import_mlflow_model(cli.store(), request, safe=settings.safe_loading, actor=actor())
    version = imported.version
    console.print(
        f"Imported [bold]{name}:{version.version}[/bold]"
        f"{f' as {alias}' if alias else ''} from {source} "
        f"({imported.flavor} flavour, served by the {imported.framework} runtime, "
        f"{len(version.signature.inputs)} features).",
        highlight=False,
    )
