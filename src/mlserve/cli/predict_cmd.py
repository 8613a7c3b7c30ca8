"""`mlserve predict`: score a file in-process with a registered model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mlserve.cli.context import context, err_console
from mlserve.errors import InvalidInput
from mlserve.types import ModelRef, read_manifest

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

    Rows are checked exactly as the server and batch jobs check them; the first row the model
    cannot take stops the command with its row number and reason (batch jobs write such rows
    to a rejects file instead). Extra columns (such as the target) are ignored unless the
    model's extra_columns setting refuses them; the output has one row per input row.

    Example: [bold]mlserve predict churn@production customers.csv --proba -o scores.csv[/bold]
    """
    # Imported here: pandas and scikit-learn take a second to import; other commands need not.
    from mlserve.batch.inline import score_file
    from mlserve.batch.scoring import ROW, ScoringOptions
    from mlserve.inputs import InputPolicy, build_checker, rejection_text
    from mlserve.runtimes import load_runtime

    fmt = output_format or (output.suffix.lstrip(".").lower() if output else "csv")
    if fmt not in OUTPUT_FORMATS:
        raise InvalidInput(f"unknown output format {fmt!r}; use {', '.join(OUTPUT_FORMATS)}")
    if fmt == "parquet" and output is None:
        raise InvalidInput("parquet output needs --output FILE")
    cli = context(ctx)
    settings = cli.settings()
    store = cli.store()
    version = store.resolve(ModelRef.parse(ref))
    folder = store.local_folder(version)
    runtime = load_runtime(folder, expected_sha256=version.sha256, safe=settings.safe_loading)
    if proba and not runtime.has_proba:
        raise InvalidInput("--proba: this model does not give probabilities (no predict_proba)")
    policy = InputPolicy.from_rules(settings.input_rules_for(version.name))
    checker = build_checker(runtime, read_manifest(folder).reference_profile, policy)
    options = ScoringOptions(f"{version.name}:{version.version}", proba=proba, policy=policy)
    scored = score_file(data, runtime, checker, options)
    if scored.rejects:
        rejections = [(reject.row, reject.reason) for reject in scored.rejects]
        raise InvalidInput(f"{data}: {rejection_text(rejections)}")
    if scored.table is None:
        raise InvalidInput(f"{data}: no rows to predict")
    result = scored.table.drop_columns([ROW]).to_pandas()
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
