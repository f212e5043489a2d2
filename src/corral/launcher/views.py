"""What status views show: one dict per process (the control API's shape) and the rich table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

    from corral.gpu import Attribution
    from corral.launcher.orchestrator import Orchestrator
    from corral.launcher.resources import Sample

_COLOURS = {
    "stopped": "grey50",
    "starting": "yellow",
    "restarting": "yellow",
    "stopping": "yellow",
    "healthy": "green",
    "unhealthy": "red",
    "failed": "red",
}


PARKED = "on demand: starts with the model's next request"


def service_view(
    orch: Orchestrator,
    name: str,
    tail: int = 0,
    gpu_att: Attribution | None = None,
    samples: dict[int, Sample] | None = None,
) -> dict[str, Any]:
    """The control API's description of one process (``gpu_att``: the fleet's GPU attribution;
    ``samples``: PID -> shared resource sample, so the process table is not rescanned)."""
    from corral.launcher.backends import uptime as backend_uptime
    from corral.launcher.gpus import service_gpu_fields
    from corral.launcher.resources import status_of

    p = orch.plan.get(name)
    assert p is not None
    sup = orch.sups[name]
    info = sup.info() if samples is None else status_of(sup, samples.get(sup.pid or 0))
    shown = orch.status(name)  # a sitter: its backend's state, pid, restarts, reason
    waiting = orch.waiting.get(name)
    refused = orch.refused.get(name) if info["state"] == "stopped" and not waiting else None
    state = "starting" if waiting else "failed" if refused else shown["state"]
    parked = orch.ondemand.parked(name)  # an on-demand model's engine, idle or not woken yet
    backend = shown.get("backend")
    uptime_s, started_at = info["uptime_s"], info.get("started_at")
    if "sitter" in shown:
        uptime_s = backend_uptime(backend) if backend else None
        started_at = backend.started_at if backend else None
    view: dict[str, Any] = {
        "name": name,
        "kind": p.kind,
        "group": p.group,
        "state": state,
        "pid": shown["pid"],
        "ports": p.ports,
        "url": p.url,
        "uptime_s": uptime_s,
        "started_at": started_at,
        "restarts": shown["restarts"],
        "last_exit": shown["last_exit"],
        "reason": waiting or refused or shown["reason"] or (PARKED if parked else None),
        "parked": parked,
        "cpu_percent": info["cpu_percent"],
        "rss_bytes": info["rss_bytes"],
        "children": info["children"],
        "models": p.models,
        "gpus": p.gpus,
        **service_gpu_fields(gpu_att, name),
        "depends_on": [{"name": d.name, "condition": d.condition} for d in p.depends_on],
        "auto_start": p.auto_start,
        "adopted": info.get("adopted", False),
        "log_file": str(sup.spec.log_file) if sup.spec.log_file else None,
    }
    if "sitter" in shown:
        view["sitter"] = {**shown["sitter"], "uptime_s": info["uptime_s"]}
    if backend is not None and backend.state == "failed":
        view["tail"] = backend.last_lines or sup.tail(20)
    elif info["state"] == "failed":
        view["tail"] = info.get("last_lines") or sup.tail(20)
    elif tail:
        view["tail"] = sup.tail(tail)
    return view


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1048576:.0f} MB"


def _gpu_cell(s: dict[str, Any]) -> str:
    """``0,1 (12.0 GiB)``: the GPUs a process was given and the memory its tree holds."""
    ids = ",".join(map(str, s.get("gpus") or [])) or "-"
    held = s.get("gpu_memory_bytes") or 0
    return f"{ids} ({held / (1 << 30):.1f} GiB)" if held else ids


def _sitter_cell(sitter: dict[str, Any] | None) -> str:
    """``running 1234`` (the sitter's state and PID), ``restarts N`` when it restarted."""
    if not sitter:
        return ""
    state = "running" if sitter.get("state") in ("healthy", "starting", "unhealthy") else sitter.get("state")
    text = f"{state} {sitter['pid']}" if sitter.get("pid") else str(state)
    return text + (f", {sitter['restarts']} restarts" if sitter.get("restarts") else "")


def _uptime(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def status_table(services: list[dict[str, Any]], title: str | None = None) -> Table:
    """A rich table of service views."""
    from rich.table import Table

    t = Table(title=title, expand=False, title_justify="left")
    cols = ["name", "kind", "state", "pid", "ports", "uptime", "restarts", "cpu", "mem"]
    with_gpus = any(s.get("gpus") or s.get("gpu_memory_bytes") for s in services)
    if with_gpus:
        cols.append("gpus")
    with_sitters = any(s.get("sitter") for s in services)
    if with_sitters:
        cols.append("sitter")  # a backend's row shows the backend; its sitter's own state here
    for col in (*cols, "reason"):
        t.add_column(col, no_wrap=col != "reason", overflow="fold")
    for s in services:
        colour = _COLOURS.get(s["state"], "white")
        cpu = s.get("cpu_percent")
        extra = [_gpu_cell(s)] if with_gpus else []
        if with_sitters:
            extra.append(_sitter_cell(s.get("sitter")))
        t.add_row(
            s["name"],
            s["kind"],
            f"[{colour}]{s['state']}[/]",
            str(s["pid"] or "-"),
            ",".join(str(v) for v in s["ports"].values()) or "-",
            _uptime(s.get("uptime_s")),
            str(s.get("restarts", 0)),
            "-" if cpu is None else f"{cpu:.0f}%",
            _size(s.get("rss_bytes")),
            *extra,
            (s.get("reason") or "") if s["state"] != "healthy" else "",
        )
    return t
