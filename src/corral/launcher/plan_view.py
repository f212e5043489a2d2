"""``corral config check``: the resolved plan as a table (secrets masked)."""

from __future__ import annotations

import shlex

from rich.console import Console
from rich.table import Table

from corral.config import Plan

_SECRET_FLAGS = ("--token", "--registry-token", "--admin-token")


def masked_argv(argv: list[str]) -> list[str]:
    """``argv`` with the value after each token flag replaced by ``***``."""
    out = list(argv)
    for i, word in enumerate(argv[:-1]):
        if word in _SECRET_FLAGS:
            out[i + 1] = "***"
    return out


def print_plan(plan: Plan, console: Console | None = None) -> None:
    """Print every process in start order with its argv, ports, GPUs and dependencies."""
    console = console or Console()
    t = Table(
        title=f"{plan.config_file}: {len(plan.processes)} processes, in start order", title_justify="left"
    )
    for col in ("#", "name", "kind", "group", "ports", "gpus", "after"):
        t.add_column(col, overflow="fold")
    for i, p in enumerate(plan.processes, 1):
        t.add_row(
            str(i),
            p.name + ("" if p.auto_start else " (manual)"),
            p.kind,
            p.group,
            " ".join(f"{k}={v}" for k, v in p.ports.items()) or "-",
            ",".join(map(str, p.gpus)) or "-",
            " ".join(f"{d.name}{'' if d.condition == 'healthy' else '(started)'}" for d in p.depends_on)
            or "-",
        )
    console.print(t)
    console.print(
        f"state dir {plan.state_dir}; control API and dashboard on {plan.host}:{plan.dashboard_port}"
    )
    for p in plan.processes:
        console.print(f"[bold]{p.name}[/]: ", end="")
        console.print(shlex.join(masked_argv(p.argv)), soft_wrap=True, markup=False, highlight=False)
