"""Process trees: find them, stop them whole, and tell who holds a port.

A stop is SIGTERM to the process group and to every known descendant, a grace period, then
SIGKILL to the group and to whatever is left. Descendants are captured (psutil, identity = pid +
create time) before any signal, so grandchildren that escaped the group with setsid() die too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterable, Iterator, Mapping

import psutil


def children_map() -> dict[int, list[int]]:
    """``{ppid: [child pids]}`` for the whole process table, in one pass.

    Callers that look at many trees at once (GPU attribution, the launcher's resource sample)
    share one map: ``psutil.Process.children()`` rescans the table on every call.
    """
    kids: dict[int, list[int]] = {}
    for p in psutil.process_iter(["ppid"]):
        ppid = p.info["ppid"]
        if ppid is not None:
            kids.setdefault(ppid, []).append(p.pid)
    return kids


def process_tree(roots: Iterable[int], kids: Mapping[int, list[int]] | None = None) -> set[int]:
    """``roots`` and every live descendant of them."""
    kids = children_map() if kids is None else kids
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(kids.get(pid, ()))
    return seen


def snapshot(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_all(pgid: int, procs: Iterable[psutil.Process], sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for p in procs:
        try:
            p.send_signal(sig)  # psutil refuses when the pid was reused by another process
        except psutil.Error:
            pass


def _capture(pid: int, extra: Iterable[psutil.Process]) -> list[psutil.Process]:
    seen: dict[int, psutil.Process] = {}
    for p in [*snapshot(pid), *extra]:
        seen.setdefault(p.pid, p)
        try:
            for c in p.children(recursive=True):
                seen.setdefault(c.pid, c)
        except psutil.Error:
            pass
    return list(seen.values())


def _stop_steps(pid: int, grace_s: float, extra: Iterable[psutil.Process]) -> Iterator[float]:
    """The stop sequence, free of any way to wait: yields how long to wait before looking again
    (so the async and the blocking stop are one sequence, waited on two ways)."""
    procs = _capture(pid, extra)
    _signal_all(pid, procs, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in procs):
        yield 0.02
    procs = [p for p in _capture(pid, procs) if _alive(p)]
    if procs or _group_alive(pid):
        _signal_all(pid, procs, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in procs):
            yield 0.01


async def stop_tree(pid: int, grace_s: float = 10, extra: Iterable[psutil.Process] = ()) -> None:
    """SIGTERM the group and tree of ``pid``, wait ``grace_s``, then SIGKILL what is left.

    ``extra`` adds processes known to belong to the tree (e.g. seen earlier, before their
    parent died and they were re-parented). Returns once nothing of the tree is alive.
    """
    for wait in _stop_steps(pid, grace_s, extra):
        await asyncio.sleep(wait)


def kill_tree(pid: int, grace_s: float = 10, extra: Iterable[psutil.Process] = ()) -> None:
    """:func:`stop_tree` for code without an event loop (signal handlers, atexit, ``corral down``)."""
    for wait in _stop_steps(pid, grace_s, extra):
        time.sleep(wait)


def kill_now(pid: int, extra: Iterable[psutil.Process] = ()) -> list[psutil.Process]:
    """SIGKILL the group of ``pid`` and the given processes at once; returns those signalled.

    Used after the group leader crashed, when its leftovers are orphans and owe nobody a grace.
    """
    procs = [p for p in extra if p.pid != pid and _alive(p)]
    _signal_all(pid, procs, signal.SIGKILL)
    return procs


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def port_holder(port: int, host: str = "127.0.0.1") -> tuple[int, str] | None:
    """``(pid, command line)`` of the process listening on ``port`` (on ``host`` or a wildcard)."""
    wild = {host, "0.0.0.0", "::", "::ffff:" + host}
    try:
        conns = psutil.net_connections(kind="inet")
    except psutil.Error:
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.laddr.ip in wild:
            if c.pid is None:
                return None
            try:
                cmd = " ".join(psutil.Process(c.pid).cmdline())
            except psutil.Error:
                cmd = "?"
            return c.pid, cmd
    return None
