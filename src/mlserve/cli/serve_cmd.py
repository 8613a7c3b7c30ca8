"""`mlserve serve`: the inference server."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlserve import __version__
from mlserve.cli.context import context, err_console
from mlserve.errors import ConfigError
from mlserve.logging import configure_logging

if TYPE_CHECKING:
    from mlserve.settings import Settings

FACTORY = "mlserve.serving:app_from_environment"


def serve(
    ctx: typer.Context,
    refs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Models to serve: NAME, NAME:VERSION or NAME@ALIAS. "
            "Default: every model's production alias."
        ),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8080).")] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(help="Port of the gRPC inference service (default 8081; 0 switches it off)."),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Server processes sharing the port.")] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(help="Serve self-describing version folders (mlserve.json) with no database."),
    ] = None,
    all_models: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Serve every registered model (production, else its latest version), "
            "including models registered after start-up.",
        ),
    ] = False,
) -> None:
    """Serve models over HTTP (Open Inference Protocol v2, /v1 JSON and MLflow /invocations) and
    the Open Inference Protocol over gRPC.

    Example: [bold]mlserve serve churn@production --port 8080[/bold]
    """
    # No garbage collection until the first load is done (ModelManager.load_all turns it on
    # after freezing what start-up made): importing the web stack and loading models creates
    # objects by the hundred thousand and nearly no garbage, and the full collections that
    # triggered cost a sixth of the cold start (bench/results/coldstart.md). On again whatever
    # happens: a start-up error must not leave a calling process without a collector.
    gc.disable()
    try:
        _serve(ctx, refs, host, port, grpc_port, workers, model_dir, all_models=all_models)
    finally:
        gc.enable()


def _serve(
    ctx: typer.Context,
    refs: list[str] | None,
    host: str | None,
    port: int | None,
    grpc_port: int | None,
    workers: int | None,
    model_dir: Path | None,
    *,
    all_models: bool,
) -> None:
    cli = context(ctx)
    if all_models and model_dir is not None:
        raise ConfigError("--all serves the registry; it cannot be combined with --model-dir")
    # Settings before the web stack: pydantic reads the Settings class's field docstrings by
    # walking sys.modules, which takes three times as long once the web stack is imported.
    settings = cli.settings(host=host, port=port, workers=workers, grpc_port=grpc_port)
    # Imported here: the web stack takes a second to import; other commands need not.
    from mlserve.serving import (
        ServeOptions,
        build_app,
        check_http_port,
        serve_single,
        serve_workers,
        warn_if_exposed,
    )

    configure_logging(settings.log_level, settings.log_format)
    options = ServeOptions(
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        drain_timeout_s=settings.drain_timeout_s,
        has_api_key=bool(settings.api_keys),
    )
    warning = warn_if_exposed(options)
    if warning:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if options.workers > 1:
        overrides = {
            **cli.flags,
            "host": settings.host,
            "port": settings.port,
            "grpc_port": settings.grpc_port,
        }
        env = {f"MLSERVE_{k.upper()}": str(v) for k, v in overrides.items()}
        spec = {
            "refs": list(refs or []),
            "model_dir": str(model_dir) if model_dir else None,
            "all": all_models,
        }
        # Fail fast on typos and a taken port, in this process.
        build_app(settings, list(refs or []), model_dir, follow_all=all_models)
        check_http_port(settings.host, settings.port)
        if settings.grpc_port:
            _check_grpc_port(settings.host, settings.grpc_port)
        _print_banner(settings, refs, model_dir, all_models=all_models)
        gc.enable()  # this process only supervises; each worker loads (app_from_environment)
        serve_workers(FACTORY, options, spec, env)
        return
    app = build_app(settings, list(refs or []), model_dir, follow_all=all_models)
    check_http_port(settings.host, settings.port)
    if settings.grpc_port:
        _check_grpc_port(settings.host, settings.grpc_port)
    _print_banner(settings, refs, model_dir, all_models=all_models)
    serve_single(app, options)


def _check_grpc_port(host: str, port: int) -> None:
    """The gRPC port check, imported only when gRPC is on (grpc takes a while to import)."""
    from mlserve.serving import check_grpc_port

    check_grpc_port(host, port)


def _print_banner(
    settings: Settings, refs: list[str] | None, model_dir: Path | None, *, all_models: bool
) -> None:
    """On a terminal, say what is served and where (the logs then say when it is ready)."""
    if not err_console.is_terminal:
        return
    if model_dir is not None:
        what = f"the version folders in {model_dir}"
    elif all_models:
        what = "every registered model (production, else the latest version)"
    elif refs:
        what = ", ".join(refs)
    else:
        what = "every model's production alias"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    http = f"http://{host}:{settings.port}"
    lines = [
        f"[bold]mlserve {__version__}[/bold] serving {what}",
        f"  REST     {http}  (Open Inference Protocol /v2, /v1 JSON, MLflow /invocations)",
        f"  gRPC     {host}:{settings.grpc_port}  (inference.GRPCInferenceService)"
        if settings.grpc_port
        else "  gRPC     off",
        f"  docs     {http}/docs",
        f"  metrics  {http}/metrics",
        f"  ready    {http}/v2/health/ready  (a log line lists the versions once they are loaded)",
        "  Ctrl-C drains in-flight requests and stops.",
    ]
    for line in lines:
        err_console.print(line, highlight=False, soft_wrap=True)
