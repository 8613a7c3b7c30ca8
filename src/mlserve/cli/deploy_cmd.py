"""`mlserve k8s`: Kubernetes and KServe manifests for an existing project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlserve.cli.context import console, context


def k8s(
    ctx: typer.Context,
    refs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Models the pods serve from the registry (NAME, NAME:VERSION, NAME@ALIAS). "
            "None: the image serves the versions `mlserve build` baked into it."
        ),
    ] = None,
    image: Annotated[str, typer.Option(help="Image the pods run.")] = "mlserve:latest",
    name: Annotated[str, typer.Option(help="Name of the Kubernetes objects.")] = "mlserve",
    replicas: Annotated[int, typer.Option(help="Fewest replicas (the autoscaler adds more).")] = 2,
    max_replicas: Annotated[int, typer.Option(help="Most replicas.")] = 10,
    folder: Annotated[Path, typer.Option(help="Project folder; files go under deploy/.")] = Path(
        "."
    ),
    force: Annotated[bool, typer.Option(help="Overwrite files that exist.")] = False,
) -> None:
    """Write Kubernetes manifests (Deployment, Service, HPA, PDB, NetworkPolicy, PodMonitor, a
    KEDA example) and KServe ones (ClusterServingRuntime, an InferenceService example).

    Each REF is checked against the registry first. The database URL and API keys come from
    a Secret named NAME-secrets, never from the files.

    Example: [bold]mlserve k8s churn@production --image registry.example.com/churn:3[/bold]
    """
    from mlserve.scaffold import DeploySpec, write_manifests

    cli = context(ctx)
    settings = cli.settings()
    if refs:
        store = cli.store()
        for ref in refs:
            store.resolve(ref)
    spec = DeploySpec(
        name=name,
        image=image,
        refs=tuple(refs or ()),
        replicas=replicas,
        max_replicas=max_replicas,
        drain_timeout_s=settings.drain_timeout_s,
        artifact_root=settings.artifact_root if refs else None,
    )
    written = write_manifests(folder, spec, force=force)
    console.print(f"Wrote Kubernetes manifests into [bold]{folder}[/bold]:")
    for file in written:
        console.print(f"  {file}")
    console.print(
        "\nNext:\n"
        f"  kubectl create secret generic {name}-secrets --from-literal=api-key=...\n"
        f"  kubectl apply -f {folder / 'deploy/kubernetes'}",
        highlight=False,
    )
