"""`mlserve predict`: score a file in-process with a registered model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mlserve.cli.context import context, err_console
from mlserve.errors import InvalidInput
from mlserve.types import ModelRef

OUTPUT_FORMATS = ("csv", "json", "parquet")


def predict(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS.")],
    data: Annotated[Path, typer.Argument(help="Rows to score: CSV, Parquet or JSON.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: standard output).")
    ] = None,
    output_format: Annotated[
        str | None,
        typer.Option("--format", help="csv, json or parquet (default: from --output, else csv)."),
    ] = None,
    proba: Annotated[bool, typer.Option(help="Add a probability column per class.")] = False,
) -> None:
    """Predict with a registered model, in this process, on every row of DATA.

    Extra columns (such as the target) are ignored; the output has one row per input row.

    Example: [bold]mlserve predict churn@production customers.csv --proba -o scores.csv[/bold]
    """
    # Imported here: pandas and scikit-learn take a second to import; other commands need not.
    import pandas as pd

    from mlserve.runtimes import load_runtime
    from mlserve.training import read_dataset

    fmt = output_format or (output.suffix.lstrip(".").lower() if output else "csv")
    if fmt not in OUTPUT_FORMATS:
        raise InvalidInput(f"unknown output format {fmt!r}; use {', '.join(OUTPUT_FORMATS)}")
    if fmt == "parquet" and output is None:
        raise InvalidInput("parquet output needs --output FILE")
    cli = context(ctx)
    settings = cli.settings()
    store = cli.store()
    version = store.resolve(ModelRef.parse(ref))
    runtime = load_runtime(
        store.local_folder(version), expected_sha256=version.sha256, safe=settings.safe_loading
    )
    frame = read_dataset(data)
    result = pd.DataFrame({"prediction": runtime.predict(frame)})
    if proba:
        probabilities = runtime.predict_proba(frame)
        for index, label in enumerate(runtime.classes):
            result[f"proba_{label}"] = probabilities[:, index]
    result["model_version"] = f"{version.name}:{version.version}"
    if output is None:
        if fmt == "json":
            sys.stdout.write(result.to_json(orient="records", lines=False) + "\n")
        else:
            result.to_csv(sys.stdout, index=False)
        return
    if fmt == "json":
        result.to_json(output, orient="records")
    elif fmt == "parquet":
        result.to_parquet(output, index=False)
    else:
        result.to_csv(output, index=False)
    err_console.print(f"wrote {len(result)} predictions to {output}", highlight=False)
