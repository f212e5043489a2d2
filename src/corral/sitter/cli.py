"""`corral sit`: babysit one backend (the legacy babysitter's flags keep working).

The flags are derived from :class:`corral.settings.SitterSettings` (corral.settings.cli); the
launcher passes none of them: it writes the settings to a private file and gives ``--settings``.
"""

from __future__ import annotations

import inspect
from typing import Any

import typer

from corral.settings.cli import command
from corral.settings.sitter import SitterSettings

_KW = inspect.Parameter.KEYWORD_ONLY


def _extra() -> list[inspect.Parameter]:
    def opt(name: str, default: Any, kind: Any, *flags: str, help: str) -> inspect.Parameter:
        return inspect.Parameter(name, _KW, default=typer.Option(default, *flags, help=help), annotation=kind)

    return [
        opt(
            "settings",
            None,
            str | None,
            "--settings",
            help="JSON file of these settings (what `corral up` writes, mode 0600); flags override.",
        ),
        opt(
            "config_file",
            None,
            str | None,
            "--config-file",
            help="TOML file with the same keys (flags override).",
        ),
        opt("log_level", "info", str, "--log-level", help="debug, info, warning or error."),
    ]


def _run(values: dict[str, Any]) -> None:
    """Start a backend, keep it alive, register it, and serve /health /models /info /logs on port + 1."""
    from corral.sitter.main import main

    settings = values.pop("settings")
    config_file = values.pop("config_file")
    log_level = values.pop("log_level")
    raise typer.Exit(main(values, config_file, log_level, settings_file=settings))


def register(app: typer.Typer) -> None:
    """Add the ``sit`` command to the corral CLI."""
    app.command("sit")(command(SitterSettings, _extra(), _run))
