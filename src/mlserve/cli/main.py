"""The `mlserve` command: global options, sub-commands, and the one error-to-exit-code table."""

from __future__ import annotations

import atexit
import contextlib
import inspect
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mlserve import __version__
from mlserve.cli import (
    batch_cmd,
    build_cmd,
    convert_cmd,
    deploy_cmd,
    drift_cmd,
    import_cmd,
    init_cmd,
    log_cmd,
    predict_cmd,
    registry_cmds,
    rollout_cmd,
    serve_cmd,
    status_cmd,
    train_cmd,
)
from mlserve.cli.context import CliContext, err_console
from mlserve.errors import (
    ArtifactError,
    ConfigError,
    Conflict,
    DatasetError,
    InvalidInput,
    MlserveError,
    NotFound,
    RegistryUnavailable,
)

try:  # newer typer runs on its own copy of click, so click.ClickException would never match
    from typer._click.exceptions import ClickException
except ImportError:  # older typer runs on click itself
    from click import ClickException  # type: ignore[assignment]  # the same role, older typer

log = logging.getLogger(__name__)

app = typer.Typer(
    name="mlserve",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

EXIT_CODES: list[tuple[type[MlserveError], int]] = [
    (NotFound, 3),
    (DatasetError, 4),
    (InvalidInput, 4),
    (ArtifactError, 5),
    (ConfigError, 6),
    (RegistryUnavailable, 8),
    (Conflict, 7),
    (MlserveError, 1),
]
"""Searched in order; the first class the error is an instance of gives the exit code."""


def _print_version(wanted: bool) -> None:
    """Eager ``--version``: print what `mlserve version` prints and stop."""
    if wanted:
        version()
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            help="Print mlserve's version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Settings file (default: ./mlserve.yaml).")
    ] = None,
    home: Annotated[
        Path | None, typer.Option(help="Folder of the embedded registry (default: .mlserve).")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Registry database URL (SQLAlchemy).", show_default=False)
    ] = None,
    artifact_root: Annotated[
        str | None, typer.Option(help="Artifact root: a folder or an fsspec URL.")
    ] = None,
    safe_loading: Annotated[
        bool | None,
        typer.Option("--safe-loading/--no-safe-loading", help="Load only skops artifacts."),
    ] = None,
) -> None:
    """Train, register, serve and monitor machine-learning models.

    Settings come from defaults < mlserve.yaml < MLSERVE_* environment and .env < flags.

    Example: [bold]mlserve --home /srv/registry models list[/bold]
    """
    flags = {
        "home": home,
        "database_url": database_url,
        "artifact_root": artifact_root,
        "safe_loading": safe_loading,
    }
    ctx.obj = CliContext(config=config, flags={k: v for k, v in flags.items() if v is not None})


@app.command()
def version() -> None:
    """Print mlserve's version.

    Example: [bold]mlserve version[/bold] (or [bold]mlserve --version[/bold])
    """
    typer.echo(f"mlserve {__version__}")


app.command(name="init")(init_cmd.init)
app.command(name="train")(train_cmd.train)
app.command(name="register")(registry_cmds.register)
app.command(name="import")(import_cmd.import_model)
app.command(name="predict")(predict_cmd.predict)
app.command(name="batch")(batch_cmd.batch)
app.command(name="status")(status_cmd.status)
app.command(name="drift")(drift_cmd.drift)
app.command(name="serve")(serve_cmd.serve)
app.command(name="compare")(rollout_cmd.compare)
app.command(name="k8s")(deploy_cmd.k8s)
app.command(name="build")(build_cmd.build)
app.command(name="convert")(convert_cmd.convert)
app.add_typer(registry_cmds.models_app, name="models")
app.add_typer(registry_cmds.alias_app, name="alias")
app.add_typer(rollout_cmd.rollout_app, name="rollout")
app.add_typer(registry_cmds.runs_app, name="runs")
app.add_typer(log_cmd.log_app, name="log")


def reflowed(doc: str) -> str:
    """A docstring with each paragraph on one line: rich help keeps line breaks as written,
    so source-wrapped lines came out ragged at any terminal width other than the source's."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _reflow_help(commands: typer.Typer) -> None:
    """Reflow the help of every command of ``commands`` and of its sub-command groups."""
    callback = commands.registered_callback
    if callback is not None and callback.callback is not None and callback.callback.__doc__:
        callback.help = reflowed(callback.help or callback.callback.__doc__)
    for info in commands.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback is not None else None)
        if doc:
            info.help = reflowed(doc)
    for group in commands.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


_reflow_help(app)


def exit_code_for(error: MlserveError) -> int:
    """The exit code for an error, from EXIT_CODES."""
    return next(code for cls, code in EXIT_CODES if isinstance(error, cls))


def run(argv: list[str] | None = None) -> int:
    """Entry point: run a command; errors become one line on stderr and a non-zero exit code."""
    command = typer.main.get_command(app)
    try:
        # Without standalone mode, click returns (not raises) a command's typer.Exit code.
        result = command.main(args=argv, prog_name="mlserve", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except ClickException as exc:  # usage errors: bad or missing arguments, unknown commands
        exc.show()
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        return 130
    except MlserveError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        if isinstance(exc, DatasetError):
            for problem in exc.problems:
                err_console.print(f"  - {problem}", highlight=False, markup=False, soft_wrap=True)
        return exit_code_for(exc)
    except Exception as exc:  # the CLI edge: one line, never a traceback on screen
        log.debug("unexpected error", exc_info=True)
        err_console.print(
            f"[red]error:[/red] unexpected {type(exc).__name__}: {escape(str(exc))}",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    return result if isinstance(result, int) else 0


def entry() -> None:
    """Console-script wrapper around :func:`run`; ends the process without tearing it down.

    Once a command has finished, everything it wrote is closed and flushed (batch outputs and
    checkpoints are fsynced, registry transactions committed). What a normal exit does next,
    freeing the modules of scikit-learn, pandas and SQLAlchemy object by object, took 0.1 to
    0.5 s here: a third of a short `mlserve batch` job's overhead. So the exit handlers run, the
    standard streams are flushed and the process ends. When a non-daemon thread is still alive
    (which a normal exit would wait for), the normal exit is taken instead.
    """
    code = run()
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()  # logging.shutdown, multiprocessing's clean-up, ...
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, a closed stream
            stream.flush()
    os._exit(code)
