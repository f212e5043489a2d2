"""Helpers for the tests of deploy/ (compose, Kubernetes, systemd): corral's own CLI and defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import typer.main

from corral.cli import app

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def parse_corral(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``argv`` (after ``corral``) with corral's own CLI: (command, its parameters).

    Fails the test with click's message for an unknown command, option or bad value, so every
    command line in deploy/ is one corral accepts today.
    """
    group = typer.main.get_command(app)
    try:
        name, command, rest = group.resolve_command(click.Context(group), list(argv))
        assert name is not None and command is not None, f"no corral command in {argv}"
        return name, command.make_context(name, rest).params
    except Exception as exc:  # typer vendors click: its exceptions are not click's
        raise AssertionError(f"corral {' '.join(argv)}: {exc}") from None


def option(argv: list[str], name: str) -> str | None:
    """The value of ``--name V`` / ``--name=V`` in ``argv`` (the last wins)."""
    found = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(name + "="):
            found = arg.split("=", 1)[1]
    return found
