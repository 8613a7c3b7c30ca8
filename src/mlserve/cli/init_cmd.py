"""`mlserve init`: a ready project folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlserve.cli.context import console


def init(
    folder: Annotated[Path, typer.Argument(help="Project folder (created if needed).")] = Path("."),
    force: Annotated[bool, typer.Option(help="Overwrite files that exist.")] = False,
) -> None:
    """Create a project: mlserve.yaml, .env.example, a sample dataset and a short README.

    Example: [bold]mlserve init churn-project[/bold]
    """
    from mlserve.scaffold import SAMPLE_DATASET, SAMPLE_TARGET, init_project

    result = init_project(folder, force=force)
    console.print(f"Created an mlserve project in [bold]{result.folder}[/bold]:")
    for name in result.files:
        console.print(f"  {name}")
    console.print(
        "\nNext:\n"
        f"  cd {folder}\n"
        f"  mlserve train {SAMPLE_DATASET} --target {SAMPLE_TARGET} --name cancer --alias production\n"
        f"  mlserve predict cancer {SAMPLE_DATASET} | head",
        highlight=False,
    )
