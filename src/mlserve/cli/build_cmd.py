"""`mlserve build`: a container image serving chosen versions with no database."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from mlserve.cli.context import console, context, err_console
from mlserve.errors import MlserveError


def build(
    ctx: typer.Context,
    refs: Annotated[
        list[str], typer.Argument(help="Versions to bake in: NAME, NAME:VERSION or NAME@ALIAS.")
    ],
    tag: Annotated[str, typer.Option("--tag", "-t", help="Image tag.")],
    output: Annotated[
        Path | None,
        typer.Option(help="Build context folder (default: HOME/build/TAG)."),
    ] = None,
    base: Annotated[
        str | None, typer.Option(help="Base image (the Dockerfile's BASE build argument).")
    ] = None,
    ca_bundle: Annotated[
        Path | None,
        typer.Option(help="CA bundle pip trusts inside the build (a build secret, not kept)."),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(help="auto (podman, else a running docker), podman, docker or none."),
    ] = "auto",
) -> None:
    """Build a container image serving the chosen versions with no database.

    Writes a build context (mlserve's sources, the Dockerfile, the versions as self-describing
    folders under models/) and builds it with podman or docker, installing the extras the
    versions' frameworks need (EXTRAS build argument); with neither (or --engine none) prints
    the command to run.

    Example: [bold]mlserve build churn@production --tag churn:3[/bold]
    """
    from mlserve.scaffold.image import (
        BakedVersion,
        BuildOptions,
        build_command,
        find_engine,
        image_extras,
        source_checkout,
        write_build_context,
    )

    if engine not in {"auto", "podman", "docker", "none"}:
        raise typer.BadParameter("choose auto, podman, docker or none", param_hint="--engine")
    cli = context(ctx)
    store = cli.store()
    baked = []
    for ref in refs:
        version = store.resolve(ref)
        folder = store.local_folder(version)
        baked.append(BakedVersion(version.name, version.version, version.framework, folder))
    extras = image_extras(item.framework for item in baked)  # before writing: it may refuse
    context_dir = output or cli.settings().home / "build" / re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)
    write_build_context(context_dir, source_checkout(), baked)
    console.print(f"Wrote the build context [bold]{context_dir}[/bold] with:", highlight=False)
    for item in baked:
        console.print(f"  models/{item.name}/{item.version}", highlight=False)
    chosen = find_engine() if engine == "auto" else (None if engine == "none" else engine)
    options = BuildOptions(tag=tag, base=base, ca_bundle=ca_bundle, extras=extras)
    if chosen is None:
        command = build_command("docker", context_dir, options)
        console.print(
            f"No container engine here; build it with:\n  {shlex.join(command)}", highlight=False
        )
        return
    command = build_command(chosen, context_dir, options)
    err_console.print(f"Running: {shlex.join(command)}", highlight=False)
    if subprocess.run(command, check=False).returncode != 0:
        raise MlserveError(f"{chosen} build failed; the context is in {context_dir}")
    console.print(
        f"Built [bold]{tag}[/bold]. Run it:\n"
        f"  {chosen} run --rm --read-only -p 127.0.0.1:8080:8080 {tag}",
        highlight=False,
    )
