"""``corral up`` in the foreground (or as the detached daemon): supervise, serve the control API,
stop everything in reverse order on SIGINT/SIGTERM or ``POST /api/shutdown``.

Signals only set flags; the loop does the work. A second Ctrl-C skips the grace periods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from pathlib import Path

from corral.config import Plan, ProcessPlan
from corral.errors import SpawnError
from corral.launcher.orchestrator import Orchestrator
from corral.launcher.state import LauncherLock, StateDir, remove_info, write_info
from corral.proc.tree import kill_now, port_holder

log = logging.getLogger(__name__)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        holder = port_holder(port, host)
        who = f" by pid {holder[0]} ({holder[1][:80]})" if holder else ""
        raise SpawnError(f"dashboard port {host}:{port} is taken{who}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


def write_files(plan: Plan) -> None:
    """Files the plan hands to children (router and sitter settings): private, since they hold
    tokens and backend environments."""
    for p in plan.processes:
        write_process_files(p)


def write_process_files(p: ProcessPlan) -> None:
    """Write ``p.files`` (mode 0600); a sitter's settings files of older digests are removed."""
    for path, text in p.files.items():
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an older file keeps its mode through O_CREAT
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if p.kind == "sitter" and file.name.startswith("settings-"):
            for old in file.parent.glob("settings-*.json"):
                if old != file:
                    old.unlink(missing_ok=True)


async def run_launcher(plan: Plan, *, interactive: bool) -> int:
    """Run until asked to stop; 0 on a clean stop. Raises SpawnError if the control port is taken.

    The caller holds nothing: this takes the state dir's lock (False -> another launcher runs).
    """
    state = StateDir(plan.state_dir)
    lock = LauncherLock(state)
    if not lock.acquire():
        raise SpawnError(f"another launcher already runs for {plan.state_dir}")
    try:
        return await _run(plan, state, interactive)
    finally:
        remove_info(state)
        lock.release()


async def _run(plan: Plan, state: StateDir, interactive: bool) -> int:
    sock = _bind(plan.host, plan.dashboard_port)
    write_files(plan)
    term = None
    if interactive:
        from corral.launcher.console import Terminal, banner

        term = Terminal(plan)
    orch = Orchestrator(plan, on_line=term.line if term else None)
    shutdown = asyncio.Event()
    force = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if shutdown.is_set():
            force.set()
        shutdown.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    reloads: set[asyncio.Task[None]] = set()

    def on_hup() -> None:  # SIGHUP: reload the config file (corral reload without the CLI)
        task = asyncio.create_task(_reload_on_signal(orch))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)

    # Spawn first, import the web stack after: the registry boots while we import uvicorn.
    orch.open()
    orch.start_all()
    import uvicorn

    from corral.launcher.api import create_app

    class _Server(uvicorn.Server):
        """uvicorn without its own signal handling: the launcher owns SIGINT/SIGTERM."""

        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[no-untyped-def]
            yield

    app = create_app(orch, plan.token, shutdown)
    # Open SSE streams never end by themselves: give them a second, then close.
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=1
    )
    server = _Server(config)
    server_task = asyncio.create_task(server.serve(sockets=[sock]))
    write_info(state, host=plan.host, port=plan.dashboard_port, config=plan.config_file)
    live_task = None
    if term is not None:
        # Unwrapped, no markup: the commands in it must paste as they are.
        term.console.print(banner(plan) + "\n", soft_wrap=True, markup=False, highlight=False)
        live_task = asyncio.create_task(term.live(orch, shutdown))
    await shutdown.wait()
    if term is not None:
        term.console.print("stopping (Ctrl-C again to kill at once)...")
    stopper = asyncio.create_task(orch.close())
    forced = asyncio.create_task(force.wait())
    await asyncio.wait({stopper, forced}, return_when=asyncio.FIRST_COMPLETED)
    if not stopper.done():
        for sup in orch.sups.values():
            if sup.pid:
                kill_now(sup.pid)
        await stopper
    forced.cancel()
    if live_task is not None:
        await live_task
    server.should_exit = True
    await server_task
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.remove_signal_handler(sig)
    return 0


async def _reload_on_signal(orch: Orchestrator) -> None:
    """Reload after SIGHUP; the outcome goes to the launcher's log (there is no caller)."""
    from corral.errors import CorralError
    from corral.launcher.fleet_api import reloader_of

    try:
        report = await reloader_of(orch).reload()
    except CorralError as exc:
        log.error("reload (SIGHUP) refused, nothing changed: %s", exc)
        return
    log.warning("reload (SIGHUP): %s", report.as_dict())
