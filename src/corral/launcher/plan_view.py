"""``corral config check``: the resolved plan as a table (secrets masked)."""

from __future__ import annotations

import shlex

from rich.console import Console
from rich.table import Table

from corral.config import Plan, ProcessPlan
from corral.settings.cli import as_flags

_SECRET_FLAGS = ("--token", "--registry-token", "--admin-token")


def masked_argv(argv: list[str]) -> list[str]:
    """``argv`` with the value after each token flag replaced by ``***``."""
    out = list(argv)
    for i, word in enumerate(argv[:-1]):
        if word in _SECRET_FLAGS:
            out[i + 1] = "***"
    return out


def _free(n: int | None) -> str:
    return "? free" if n is None else f"{n / (1 << 30):.1f} GiB free"


def _gpu_cell(plan: Plan, p: ProcessPlan) -> str:
    """``1 (31.0 GiB free)`` per GPU, or ``refused`` when placement failed this replica."""
    if p.gpu_error:
        return "[red]refused[/]"
    if not p.gpus:
        return "-"
    if not plan.gpu_free:
        return ",".join(map(str, p.gpus))
    return ", ".join(f"{i} ({_free(plan.gpu_free.get(i))})" for i in p.gpus)


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
            _gpu_cell(plan, p),
            " ".join(f"{d.name}{'' if d.condition == 'healthy' else '(started)'}" for d in p.depends_on)
            or "-",
        )
    console.print(t)
    if plan.gpu_free:
        free = ", ".join(f"GPU {i}: {_free(n)}" for i, n in sorted(plan.gpu_free.items()))
        console.print(f"GPUs placement saw (free memory): {free}")
    for p in plan.processes:
        if p.gpu_error:
            console.print(f"[red]{p.name} will fail[/]: ", end="")
            console.print(p.gpu_error, markup=False, highlight=False)
    console.print(
        f"state dir {plan.state_dir}; control API and dashboard on {plan.host}:{plan.dashboard_port}"
    )
    for p in plan.processes:
        console.print(f"[bold]{p.name}[/]: ", end="")
        console.print(shlex.join(masked_argv(p.argv)), soft_wrap=True, markup=False, highlight=False)
        if p.sitter is not None:  # what the settings file says, as the flags that would say it
            console.print(
                "  settings: " + shlex.join(as_flags(p.sitter)), soft_wrap=True, markup=False, highlight=False
            )
