"""CLI: ``corral up | down | status | logs | start | stop | restart | config check``.

Every command takes ``-c FILE`` (default ``./corral.toml``) and finds the running launcher
through ``state_dir/launcher.json``. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

_CONFIG = typer.Option("corral.toml", "-c", "--config", help="corral.toml (or services.json) to use.")


def _plan(config: str) -> Any:
    from corral.config import load_plan

    return load_plan(config)


def _running(config: str) -> Any:
    """The plan as far as commands to a running launcher need it: names, state dir, token.

    GPUs are not placed: the launcher placed them when it started, and a GPU gone since (a driver
    crash, a card off the bus) must not keep ``corral down`` or ``status`` from working.
    """
    from corral.config import load_plan

    return load_plan(config, place_gpus=False)


def up(
    config: str = _CONFIG,
    detach: bool = typer.Option(
        False, "-d", "--detach", help="Run in the background; return once all are healthy."
    ),
    timeout: float = typer.Option(
        300, "--timeout", help="With -d: seconds to wait for everything to be healthy."
    ),
    foreground_daemon: bool = typer.Option(False, "--foreground-daemon", hidden=True),
) -> None:
    """Start the registry, router, sitters and services in dependency order, and supervise them."""
    import asyncio
    import time

    from corral.launcher.state import LauncherLock, StateDir, read_info

    t0 = time.monotonic()
    plan = _plan(config)
    from corral.errors import ConfigError
    from corral.launcher.preflight import router_auth_problem

    problem = router_auth_problem(plan)
    if problem:
        raise ConfigError(problem, file=plan.config_file)
    state = StateDir(plan.state_dir)
    info = read_info(state)
    probe = LauncherLock(state)
    if info is not None or not probe.acquire():
        where = f" (pid {info['pid']}, control http://{info['host']}:{info['port']})" if info else ""
        typer.echo(f"corral is already running for {plan.state_dir}{where}")
        raise typer.Exit(0)
    probe.release()
    if detach:
        from corral.launcher.console import banner
        from corral.launcher.daemon import UpFailed, fork_daemon, wait_healthy

        daemon = fork_daemon(plan)
        try:
            services = wait_healthy(plan, daemon, timeout)
        except UpFailed as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            if daemon.poll() is None:
                typer.echo(
                    "the launcher keeps running; inspect with `corral status`, stop with `corral down`",
                    err=True,
                )
            raise typer.Exit(1) from None
        n = sum(1 for s in services if s["state"] == "healthy")
        typer.echo(
            f"corral is up: {n} process(es) healthy in {time.monotonic() - t0:.2f}s (pid {daemon.pid})"
        )
        typer.echo(banner(plan))
        return
    from corral.launcher.server import run_launcher

    try:
        import uvloop

        code = uvloop.run(run_launcher(plan, interactive=not foreground_daemon))
    except ImportError:  # pragma: no cover - non-Linux
        code = asyncio.run(run_launcher(plan, interactive=not foreground_daemon))
    raise typer.Exit(code)


def down(
    config: str = _CONFIG,
    timeout: float = typer.Option(60, "--timeout", help="Seconds to wait for the launcher to stop."),
) -> None:
    """Stop everything (reverse dependency order) and make sure no process survives."""
    from corral.launcher.down import down as do_down

    typer.echo(do_down(_running(config), timeout))


def status(
    config: str = _CONFIG,
    as_json: bool = typer.Option(False, "--json", help="Print {'services': [...]} as JSON."),
) -> None:
    """Show every process; exit 1 when something that should run is not healthy."""
    from corral.launcher.client import NotRunning

    plan = _running(config)
    try:
        from corral.launcher.client import ControlClient

        services = ControlClient.for_plan(plan).get("/api/services")["services"]
    except NotRunning as exc:
        left = _left_running(plan)
        if as_json:
            typer.echo(json.dumps({"services": [], "running": False, "left_running": left}))
        else:
            typer.echo(str(exc))
            if left:
                typer.echo(f"{len(left)} process(es) of an earlier launcher are still running:")
                for p in left:
                    typer.echo(f"  {p['name']}  pid {p['pid']}  ({p['pid_file']})")
                typer.echo("`corral up` adopts them; `corral down` stops them.")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps({"services": services, "running": True}, indent=2))
    else:
        from rich.console import Console

        from corral.launcher.views import status_table

        console = Console()
        if not console.is_terminal:
            console = Console(width=200)
        console.print(status_table(services))
    wanted = [s for s in services if s.get("auto_start") or s["state"] != "stopped"]
    if any(s["state"] != "healthy" for s in wanted):
        raise typer.Exit(1)


def _left_running(plan: Any) -> list[dict[str, Any]]:
    """Processes the state dir's pid files name that still run (a launcher gone, its children
    not): the launcher's processes and the backends their sitters run."""
    from corral.launcher.down import recorded_pids
    from corral.launcher.state import StateDir
    from corral.proc import pidfile

    state = StateDir(plan.state_dir)
    out = []
    for path, pid in recorded_pids(state):
        doc = pidfile.read(path) or {}
        out.append({"name": doc.get("name") or path.stem, "pid": pid, "pid_file": str(path)})
    return out


def logs(
    name: str = typer.Argument(..., help="Process name (e.g. chat-0, router)."),
    config: str = _CONFIG,
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new lines."),
    tail: int = typer.Option(100, "--tail", "-n", help="Lines to show first."),
    sitter: bool = typer.Option(
        False, "--sitter", help="A backend: only its sitter's own lines (those marked [sitter])."
    ),
) -> None:
    """Print a process's log: for a backend, the engine's own output with its sitter's lines
    marked [sitter]. Read from state_dir/logs, so it works with the launcher down too."""
    from corral.errors import CorralError
    from corral.launcher.logtail import follow_lines, read_tail_matching
    from corral.launcher.state import StateDir
    from corral.sitter.main import SITTER_MARK

    plan = _running(config)
    path = StateDir(plan.state_dir).log_file(name)
    if plan.get(name) is None and not path.exists():
        names = ", ".join(p.name for p in plan.processes)
        raise CorralError(f"no process named {name!r} (processes: {names})")

    def keep(line: str) -> bool:
        return not sitter or line.startswith(SITTER_MARK)

    if not follow:
        for line in read_tail_matching(path, tail, keep):
            typer.echo(line)
        return
    import asyncio

    async def run() -> None:
        for old in read_tail_matching(path, tail, keep):
            sys.stdout.write(old + "\n")
        sys.stdout.flush()
        async for line in follow_lines(path, 0):
            if line is not None and keep(line):
                sys.stdout.write(line + "\n")
                sys.stdout.flush()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


def _action(action: str, name: str | None, all_: bool, config: str) -> None:
    from corral.errors import CorralError

    plan = _running(config)
    from corral.launcher.client import ControlClient

    client = ControlClient.for_plan(plan)
    if all_:
        path = f"/api/all/{action}"
    elif name is None:
        raise CorralError(f"corral {action}: give a process or group name, or --all")
    elif plan.get(name) is not None:
        path = f"/api/services/{name}/{action}"
    elif name in plan.groups():
        path = f"/api/groups/{name}/{action}"
    else:
        raise CorralError(f"no process or group named {name!r}")
    doc = client.post(path, timeout=300)
    for s in doc["services"]:
        typer.echo(f"{s['name']}: {s['state']}")


def start(
    name: str | None = typer.Argument(None, help="Process or group name."),
    all_: bool = typer.Option(False, "--all", help="Every process."),
    config: str = _CONFIG,
) -> None:
    """Start a process or group (its dependencies first)."""
    _action("start", name, all_, config)


def stop(
    name: str | None = typer.Argument(None, help="Process or group name."),
    all_: bool = typer.Option(False, "--all", help="Every process."),
    config: str = _CONFIG,
) -> None:
    """Stop a process or group (the launcher keeps running)."""
    _action("stop", name, all_, config)


def restart(
    name: str | None = typer.Argument(None, help="Process, backend/service or group name."),
    all_: bool = typer.Option(False, "--all", help="Every process."),
    rolling: bool = typer.Option(
        False, "--rolling", help="One replica at a time, each drained first: no request fails."
    ),
    force: bool = typer.Option(
        False, "--force", help="With --rolling: accept a gap when a single replica cannot have a surge copy."
    ),
    config: str = _CONFIG,
) -> None:
    """Restart a process or group (--rolling: replica by replica, without failing requests)."""
    if not rolling:
        _action("restart", name, all_, config)
        return
    from corral.errors import CorralError
    from corral.launcher.client import ControlClient

    if name is None or all_:
        raise CorralError("corral restart --rolling: give one backend, service, process or group name")
    client = ControlClient.for_plan(_running(config))
    doc = client.post(f"/api/rolling/{name}?force={'true' if force else 'false'}", timeout=3600)
    for s in doc["replicas"]:
        extra = f", surge {s['surge']}" if s["surge"] else ""
        left = "" if s["in_flight_left"] in (None, 0) else f", {s['in_flight_left']} still in flight"
        typer.echo(
            f"{s['name']}: restarted in {s['total_s']:.1f}s (drained {s['drain_s']:.1f}s{left}{extra})"
            + (f"; {s['note']}" if s["note"] else "")
        )


def _print_reload(doc: Any) -> None:
    d = doc["diff"]
    for name in d["added"]:
        typer.echo(f"+ {name}: start")
    for c in d["changed"]:
        typer.echo(f"~ {c['name']}: replace (rolling; {', '.join(c['fields'])})")
    for name in d["removed"]:
        typer.echo(f"- {name}: drain, then stop")
    typer.echo(f"= {len(d['unchanged'])} unchanged (kept running)")
    for s in doc.get("replaced", []):
        typer.echo(f"{s['name']}: replaced in {s['total_s']:.1f}s (drained {s['drain_s']:.1f}s)")
    for e in doc.get("errors", []):
        typer.echo(f"error: {e}", err=True)


def reload(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would change; change nothing."),
    watch: bool = typer.Option(
        False, "--watch", help="Keep watching the config file; reload on each change."
    ),
    config: str = _CONFIG,
) -> None:
    """Apply config changes to the running fleet: start new, drain+stop removed, roll changed.

    The file is validated first (a bad one changes nothing and says why); unchanged processes
    keep running with their PIDs. SIGHUP to the launcher does the same.
    """
    import time
    from pathlib import Path

    from corral.errors import CorralError
    from corral.launcher.client import ControlClient

    def once() -> None:
        client = ControlClient.for_plan(_plan(config))  # validates the file here first
        doc = client.post(f"/api/reload?dry_run={'true' if dry_run else 'false'}", timeout=3600)
        _print_reload(doc)
        if doc.get("errors"):
            raise typer.Exit(1)

    if not watch:
        once()
        return
    path = Path(config)
    seen = None
    typer.echo(f"watching {path} (Ctrl-C to stop)")
    try:
        while True:
            try:
                stamp = path.stat().st_mtime_ns
            except OSError:
                stamp = None
            if stamp != seen:
                if seen is not None:
                    try:
                        once()
                    except (CorralError, typer.Exit) as exc:  # keep watching: the next save may fix it
                        if isinstance(exc, CorralError):
                            typer.echo(f"error: {exc}; nothing changed", err=True)
                seen = stamp
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass


config_app = typer.Typer(help="Check a config file.", no_args_is_help=True)


@config_app.command("check")
def config_check(config: str = _CONFIG) -> None:
    """Validate the config and print the plan: every process, argv, ports, GPUs, start order,
    and each backend's engine command; exit 1 when `corral up` would refuse or a replica will
    fail GPU placement (2 on a config error)."""
    from corral.launcher.plan_view import print_plan
    from corral.launcher.preflight import router_auth_problem

    plan = _plan(config)
    refused = print_plan(plan)
    problem = router_auth_problem(plan)
    if problem:
        typer.secho(f"error: `corral up` would refuse to start: {problem}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    if refused:
        typer.secho(f"error: {refused} replica(s) will fail GPU placement", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the launcher's commands to the ``corral`` app."""
    for fn in (up, down, status, logs, start, stop, restart, reload):
        app.command(fn.__name__)(fn)
    app.add_typer(config_app, name="config")
