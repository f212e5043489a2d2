"""The `corral` command line: builds config from flags and hands over to each part's run.

Each part registers its own commands (``register(app)`` in ``corral.<part>.cli``) so that this
file stays a table of contents; heavy imports happen inside the commands, keeping
``corral --help`` fast.
"""

from __future__ import annotations

import importlib
import sys

import typer

from corral import __version__
from corral.errors import CorralError

app = typer.Typer(
    name="corral",
    help="Run, babysit and route a fleet of OpenAI-compatible LLM inference servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: rich markup would eat bracketed text ("[default: 127.0.0.1]", "[router]")
    # and print a value type after switches ("--detach <bool>").
    rich_markup_mode=None,
)

# Modules that add commands to `app`, in the order they appear in --help.
_PARTS = (
    "corral.launcher.cli",  # up, down, status, logs, start, stop, restart, config check
    "corral.router.cli",  # router
    "corral.registry.cli",  # registry
    "corral.sitter.cli",  # sit
    "corral.mock.cli",  # mock
    "corral.gpu_cli",  # gpus
)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


def _register_parts() -> None:
    parts: tuple[str, ...] = _PARTS
    if sys.argv[1:2] == ["router"]:
        # Every router process (each of --workers N too) needs its own part only: the others
        # build their options from settings models at import (the sitter's), ~2 MB of RSS.
        parts = ("corral.router.cli",)
    for name in parts:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # part not built yet
        module.register(app)


_register_parts()


def main() -> None:
    """Entry point of the `corral` console script: user errors print one line, never a traceback."""
    try:
        app(standalone_mode=True)
    except CorralError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
