"""``corral gpus``: the GPUs, their memory and who holds it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from corral.errors import ConfigError

if TYPE_CHECKING:
    from corral.gpu import Attribution


def _parse_services(items: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for item in items:
        name, sep, pid = item.partition("=")
        if not sep or not name or not pid.isdigit():
            raise ConfigError(f"--service {item!r}: expected NAME=PID")
        out.setdefault(name, []).append(int(pid))
    return out


def _launcher_services(config: str) -> dict[str, list[int]]:
    """Process name -> [root PID] from the launcher running for ``config`` ({} when none runs)."""
    from pathlib import Path

    from corral.errors import CorralError

    if not Path(config).is_file():
        return {}
    try:
        from corral.config import load_plan
        from corral.launcher.client import ControlClient

        doc = ControlClient.for_plan(load_plan(config)).get("/api/services")
    except CorralError:
        return {}
    return {s["name"]: [s["pid"]] for s in doc.get("services", []) if s.get("pid")}


def gpus(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    service: list[str] = typer.Option(
        [], "--service", metavar="NAME=PID", help="Attribute PID's process tree to NAME (repeatable)."
    ),
    config: str = typer.Option(
        "corral.toml", "-c", "--config", help="Name holders after this config's running launcher's services."
    ),
) -> None:
    """Show each GPU's memory and utilisation and every process holding memory on it."""
    from corral.gpu import attribute, read_inventory

    services: dict[str, list[int]] = _launcher_services(config)
    services.update(_parse_services(service))
    att = attribute(read_inventory(), services)
    if as_json:
        typer.echo(json.dumps(att.to_dict(), indent=2))
        return
    if not att.gpus:
        typer.echo(att.message or "no GPUs")
        return
    _print_table(att)


def _print_table(att: Attribution) -> None:
    from rich.console import Console
    from rich.table import Table

    from corral.gpu import gib

    table = Table(title=f"GPUs ({att.source})")
    for col in ("GPU", "Name", "Used", "Free", "Total", "Util", "Held by"):
        table.add_column(col, justify="right" if col in ("GPU", "Used", "Free", "Total", "Util") else "left")
    for g in att.gpus:
        holders = "\n".join(h.describe() for h in sorted(g.holders, key=lambda h: -h.used_memory)) or "-"
        util = "-" if g.utilization_percent is None else f"{g.utilization_percent}%"
        table.add_row(
            str(g.index), g.name, gib(g.memory_used), gib(g.memory_free), gib(g.memory_total), util, holders
        )
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``corral gpus`` to the CLI."""
    app.command("gpus")(gpus)
