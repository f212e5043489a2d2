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


# How engines spell tensor parallelism (vLLM, SGLang): it must match the GPUs a replica gets.
_TP_FLAGS = ("--tensor-parallel-size", "-tp", "--tp-size", "--tp")


def engine_command(p: ProcessPlan) -> str | None:
    """The command a sitter will run for its backend, shell-quoted (``CUDA_VISIBLE_DEVICES=0
    vllm serve ...``); None for a process that is not a sitter. Other environment values may be
    secrets and are not shown."""
    s = p.sitter
    if s is None:
        return None
    prefix = [f"CUDA_VISIBLE_DEVICES={s.cuda_visible_devices}"] if s.gpus else []
    return shlex.join([*prefix, *s.preset.argv(s.launch_request())])


def tensor_parallel(args: list[str]) -> int | None:
    """The tensor-parallel size ``args`` ask the engine for, if any."""
    for i, word in enumerate(args):
        flag, eq, value = word.partition("=")
        if flag in _TP_FLAGS:
            text = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            return int(text) if text.isdigit() else None
    return None


def tp_warning(p: ProcessPlan) -> str | None:
    """A mismatch between ``--tensor-parallel-size`` in a backend's args and its GPUs."""
    if p.sitter is None:
        return None
    tp = tensor_parallel(list(p.sitter.args))
    if tp is None or tp == len(p.gpus) or p.gpu_error:
        return None
    field = f"{p.source}.args"
    if not p.gpus:
        return (
            f"{p.name}: {field} asks for tensor parallel size {tp}, but it is given no GPU"
            f" (set gpus_per_replica = {tp})"
        )
    ids = ",".join(map(str, p.gpus))
    return (
        f"{p.name}: {field} asks for tensor parallel size {tp}, but gpus_per_replica gives it"
        f" {len(p.gpus)} GPU(s) ({ids}): the engine will fail or leave GPUs idle"
    )


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


def print_plan(plan: Plan, console: Console | None = None) -> int:
    """Print every process in start order with its argv (a backend: the engine command its sitter
    will run), ports, GPUs and dependencies, then warnings; return the number of replicas that
    will fail GPU placement."""
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
            console.print(
                "  runs: " + (engine_command(p) or ""), soft_wrap=True, markup=False, highlight=False
            )
    for p in plan.processes:
        warning = tp_warning(p)
        if warning:
            console.print("[yellow]warning[/]: ", end="")
            console.print(warning, soft_wrap=True, markup=False, highlight=False)
    return sum(1 for p in plan.processes if p.gpu_error)
