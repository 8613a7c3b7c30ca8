"""`mlserve convert`: a registered model as ONNX, checked against the original, registered."""

from __future__ import annotations

from typing import Annotated

import typer

from mlserve.cli.context import actor, console, context
from mlserve.errors import InvalidInput


def convert(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS to convert.")],
    to: Annotated[str, typer.Option("--to", help="Target format: onnx.")] = "onnx",
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
) -> None:
    """Convert a registered model to ONNX and register it as the next version of the model.

    scikit-learn pipelines convert with skl2onnx, XGBoost and LightGBM models with
    onnxmltools. Both models predict the version's reference rows first: the ONNX model is
    registered only when it gives the same classes and probabilities within 1e-5. Its tags
    name the source (converted_from).

    Example: [bold]mlserve convert wine:3 --to onnx --alias staging[/bold]
    """
    if to.lower() != "onnx":
        raise InvalidInput(f"cannot convert to {to!r}: the only target is onnx")
    # Imported here: the converters and scikit-learn take seconds to import.
    from mlserve.training.convert import convert_to_onnx

    settings = context(ctx).settings()
    result = convert_to_onnx(
        context(ctx).store(), ref, safe=settings.safe_loading, alias=alias, actor=actor()
    )
    source, version = result.source, result.version
    moved = f" Alias {alias} now points at {version.name}:{version.version}." if alias else ""
    console.print(
        f"Converted {source.name}:{source.version} to ONNX as {version.name}:{version.version} "
        f"(largest {result.compared} difference {result.largest_difference:.2g} on "
        f"{result.rows_checked} rows).{moved}",
        highlight=False,
    )
