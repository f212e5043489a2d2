"""Supervisor: one asyncio task owns one process's state machine.

Everything that changes state arrives as a message in one inbox: commands from callers
(start/stop/restart/detach, each with a future the caller awaits), process exits, probe verdicts
and timers. The owner task handles them one at a time, so concurrent callers are safe and no lock
is needed (llama-swap's process command pattern). Messages carry the generation of the process
they concern; a message about an earlier process is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import psutil

from corral.proc import pidfile, probes
from corral.proc.decide import (
    backoff_delay,
    crash_loop,
    describe_exit,
    is_stable,
    recent_restarts,
    starting_period,
    wants_restart,
)
from corral.proc.events import EventHub, State, StateEvent, Subscription
from corral.proc.logs import LineCallback, LogFile
from corral.proc.messages import Child, Cmd, Exited, Gate, Msg, Timer, Verdict
from corral.proc.spawn import describe_os_error, preflight, spawn
from corral.proc.spec import ProcessSpec
from corral.proc.tree import kill_now, snapshot, stop_tree

log = logging.getLogger(__name__)

TREE_SCAN_S = 5.0  # how often descendants are recorded, to kill re-parented ones after a crash
_NOTE = "[corral] "

# Called with the old process tree's PIDs (the root, the leader of its own process group, first)
# before a process is started again; a string it returns vetoes the start (-> FAILED, that reason).
BeforeRestart = Callable[[list[int]], Awaitable[str | None]]


class Supervisor:
    """Spawns (or adopts) ``spec``, probes it, restarts it per policy, stops it with its tree.

    ``on_line`` is called with each output line (the launcher prefixes and interleaves them);
    it must be quick and must not raise. ``before_restart`` (optional) is awaited, off the owner
    task, with the PIDs of the tree that just exited or was stopped, before it is started again
    (crash restart, ``restart``, ``start`` after ``stop``); returning a string vetoes the start.
    """

    def __init__(
        self,
        spec: ProcessSpec,
        *,
        on_line: LineCallback | None = None,
        tail_lines: int = 1000,
        before_restart: BeforeRestart | None = None,
    ) -> None:
        self.spec = spec
        self.state = State.STOPPED
        self.pid: int | None = None
        self.restarts = 0
        self.started_at: float | None = None
        self.last_exit: int | None = None
        self.reason: str | None = None
        self.last_lines: list[str] = []  # the output kept when it FAILED
        self.on_line = on_line
        self._lines: deque[str] = deque(maxlen=tail_lines)
        self._hub = EventHub()
        self._inbox: asyncio.Queue[Msg] | None = None
        self._owner: asyncio.Task[None] | None = None
        self._gen = 0
        self._child: Child | None = None
        self._log: LogFile | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._attempt = 0  # restarts since the last stable run: drives the backoff
        self._restart_times: list[float] = []
        self._ready = self._live = False
        self.before_restart = before_restart
        self._old_pids: list[int] = []  # the last exited/stopped tree, for before_restart
        self._gate: asyncio.Task[None] | None = None

    # ---- public API -------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn (or adopt the live process named by ``pid_file``) and supervise it.

        Returns once spawned (STARTING/HEALTHY) or FAILED (``reason`` says why); a no-op while
        already running or waiting to restart.
        """
        await self._send("start")

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop the whole tree (SIGTERM, ``grace_s`` or spec.stop_grace_s, SIGKILL); no restart."""
        await self._send("stop", grace_s)

    async def restart(self) -> None:
        """Stop the tree and spawn afresh (resets the backoff)."""
        await self._send("restart")

    async def detach(self) -> None:
        """Stop supervising but leave the process running (a later ``start`` may adopt it)."""
        await self._send("detach")

    async def wait_for(self, *states: State, timeout: float) -> State:
        """Wait until the state is one of ``states``; TimeoutError after ``timeout`` seconds."""
        sub = self._subscribe()
        try:
            if self.state in states:
                return self.state
            async with asyncio.timeout(timeout):
                async for event in sub:
                    if event.state in states:
                        return event.state
        except TimeoutError:
            raise TimeoutError(
                f"{self.spec.name}: still {self.state} after {timeout:g}s (wanted {', '.join(states)})"
            ) from None
        finally:
            sub.close()
        raise AssertionError("unreachable")

    def subscribe(self) -> AsyncIterator[StateEvent]:
        """Every later StateEvent; a slow subscriber loses its oldest events, never blocks us."""
        return self._subscribe()

    def _subscribe(self) -> Subscription:
        return self._hub.subscribe()

    def tail(self, n: int = 100) -> list[str]:
        """The last ``n`` output lines (supervisor notes start with ``[corral]``)."""
        if self._log is not None:
            self._log.drain()
        return list(self._lines)[-n:] if n > 0 else []

    def info(self) -> dict[str, Any]:
        """A snapshot for status views: pid, state, restarts, uptime, cpu, memory, children."""
        cpu = rss = children = None
        ps = self._child.ps if self._child else None
        if ps is not None:
            with contextlib.suppress(psutil.Error):
                with ps.oneshot():
                    cpu = ps.cpu_percent(None)  # same Process object: % since the last call
                    rss = ps.memory_info().rss
                children = len(ps.children(recursive=True))
        return {
            "name": self.spec.name,
            "pid": self.pid,
            "state": str(self.state),
            "restarts": self.restarts,
            "uptime_s": round(time.time() - self.started_at, 3) if self.started_at and self._child else None,
            "started_at": self.started_at,
            "last_exit": self.last_exit,
            "reason": self.reason,
            "cpu_percent": cpu,
            "rss_bytes": rss,
            "children": children,
            "adopted": bool(self._child and self._child.proc is None),
            "last_lines": self.last_lines if self.state == State.FAILED else [],
        }

    # ---- the owner task ---------------------------------------------------------------------

    async def _send(
        self, kind: Literal["start", "stop", "restart", "detach"], grace_s: float | None = None
    ) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._post(Cmd(kind, done, grace_s))
        await done

    def _post(self, msg: Msg) -> None:
        if self._inbox is None:
            self._inbox = asyncio.Queue()
        self._inbox.put_nowait(msg)
        if self._owner is None or self._owner.done():
            self._owner = asyncio.get_running_loop().create_task(
                self._run(), name=f"supervise {self.spec.name}"
            )

    async def _run(self) -> None:
        assert self._inbox is not None
        while True:
            msg = await self._inbox.get()
            if isinstance(msg, Cmd):
                try:
                    await getattr(self, f"_cmd_{msg.kind}")(msg)
                except Exception as exc:
                    if not msg.done.done():
                        msg.done.set_exception(exc)
                else:
                    if not msg.done.done():
                        msg.done.set_result(None)
            else:
                try:
                    await self._on_event(msg)
                except Exception:  # a bug must not leave the process unsupervised
                    log.exception("%s: supervisor error handling %r", self.spec.name, msg)
            idle = self._child is None and self._gate is None and "respawn" not in self._timers
            if idle and self._inbox.empty():
                self._close_log()
                return  # idle: nothing to watch; the next command starts a new owner

    async def _on_event(self, msg: Msg) -> None:
        if isinstance(msg, Gate):
            await self._on_gate(msg)
        elif isinstance(msg, Exited):
            await self._on_exited(msg)
        elif isinstance(msg, Verdict):
            await self._on_verdict(msg)
        elif isinstance(msg, Timer) and msg.gen == self._gen:
            self._timers.pop(msg.what, None)
            if msg.what == "respawn" and self._child is None:
                await self._relaunch()
            elif msg.what == "start_timeout" and self._child is not None and self.state == State.STARTING:
                why = f"not ready within start_timeout_s={self.spec.start_timeout_s:g}s"
                self._note(why)
                await self._stop_child(None)
                self._after_exit(why, None, uptime_s=0.0)

    # ---- commands ---------------------------------------------------------------------------

    async def _cmd_start(self, cmd: Cmd) -> None:
        if self._child is not None or self._gate is not None or "respawn" in self._timers:
            return
        self._attempt, self._restart_times = 0, []
        self.last_lines = []
        if self.before_restart is not None and self._old_pids:
            self._set(State.RESTARTING, "start requested")
            await self._relaunch()
        else:
            await self._launch(adopt=True)

    async def _cmd_stop(self, cmd: Cmd) -> None:
        self._cancel_timer("respawn")
        self._cancel_gate()
        if self._child is not None:
            self._set(State.STOPPING, "stop requested")
            self._note(f"stopping pid {self._child.pid}")
            await self._stop_child(cmd.grace_s)
        self._set(State.STOPPED, "stopped")

    async def _cmd_restart(self, cmd: Cmd) -> None:
        self._cancel_timer("respawn")
        self._cancel_gate()
        if self._child is not None:
            self._set(State.STOPPING, "restart requested")
            self._note(f"restart requested: stopping pid {self._child.pid}")
            await self._stop_child(cmd.grace_s)
        self._set(State.RESTARTING, "restart requested")
        self._attempt, self._restart_times = 0, []
        self.last_lines = []
        await self._relaunch()

    async def _cmd_detach(self, cmd: Cmd) -> None:
        self._cancel_timer("respawn")
        self._cancel_gate()
        child = self._release_child()
        if child is None:
            return
        self._note(f"detached: pid {child.pid} left running")
        if self._log is not None:
            await self._log.unfollow()
        self._set(State.STOPPED, f"detached; pid {child.pid} left running")

    # ---- process lifecycle ------------------------------------------------------------------

    async def _relaunch(self) -> None:
        """Spawn afresh, once ``before_restart`` (if any) agrees about the old tree."""
        old = self._old_pids  # kept: a vetoed start leaves the same tree to check next time
        if self.before_restart is None or not old:
            await self._launch(adopt=False)
            return
        self._gate = asyncio.get_running_loop().create_task(self._ask_gate(self._gen, old))

    async def _ask_gate(self, gen: int, old: list[int]) -> None:
        assert self.before_restart is not None
        try:
            veto = await self.before_restart(old)
        except Exception as exc:  # a broken hook must not leave the process down silently
            log.exception("%s: before_restart failed", self.spec.name)
            veto = f"before_restart failed: {exc!r}"
        self._post(Gate(gen, veto))

    async def _on_gate(self, msg: Gate) -> None:
        if msg.gen != self._gen or self._gate is None:
            return  # cancelled by a later command
        self._gate = None
        if msg.veto is not None:
            self._note(f"not restarting: {msg.veto}")
            self._fail(msg.veto)
        elif self._child is None:
            await self._launch(adopt=False)

    def _cancel_gate(self) -> None:
        if self._gate is not None:
            self._gate.cancel()
            self._gate = None
            self._gen += 1  # its answer, if already posted, is now stale

    async def _launch(self, *, adopt: bool) -> None:
        spec = self.spec
        self._gen += 1
        gen = self._gen
        logf = self._open_log()
        child = self._adopt() if adopt else None
        if child is not None:
            self._note(f"adopted running pid {child.pid}")
        else:
            pidfile.remove(spec.pid_file)
            why = await preflight(spec)
            proc = None
            if why is None:
                try:
                    proc = await spawn(spec, logf.write_fd)
                except OSError as exc:
                    why = describe_os_error(spec, exc)
            if why is not None or proc is None:
                self._note(why or "spawn failed")
                self._fail(why or "spawn failed")
                return
            try:
                ps: psutil.Process | None = psutil.Process(proc.pid)
            except psutil.Error:
                ps = None
            child = Child(proc.pid, proc, ps, time.monotonic(), time.time())
            if spec.pid_file is not None:
                pidfile.write(spec.pid_file, proc.pid, spec.argv, spec.name)
            self._note(f"started pid {proc.pid}: {' '.join(spec.argv)}")
        self._child = child
        self.pid, self.started_at = child.pid, child.started_at
        self._ready = self._live = False
        logf.follow()
        self._task(self._watch_exit(gen, child))
        self._task(self._track_tree(child))
        self._set(State.STARTING, "adopted" if child.proc is None else "spawned")
        if spec.readiness is None:
            self._become_ready(gen)
            return
        self._task(
            probes.run_loop(
                spec.readiness,
                self._verdict(gen, "startup"),
                period_s=starting_period(spec.readiness),
                until_first=True,
            )
        )
        self._timers["start_timeout"] = asyncio.get_running_loop().call_later(
            spec.start_timeout_s, self._post, Timer(gen, "start_timeout")
        )

    def _adopt(self) -> Child | None:
        if self.spec.pid_file is None:
            return None
        ps = pidfile.adoptable(self.spec.pid_file, self.spec.argv)
        if ps is None:
            return None
        try:
            created = ps.create_time()
        except psutil.Error:
            return None
        ps.cpu_percent(None)
        mono = time.monotonic() - max(0.0, time.time() - created)
        return Child(ps.pid, None, ps, mono, created)

    def _become_ready(self, gen: int) -> None:
        self._cancel_timer("start_timeout")
        self._ready = self._live = True
        self._set(State.HEALTHY, None)
        spec = self.spec
        if spec.readiness is not None:
            self._task(
                probes.run_loop(
                    spec.readiness,
                    self._verdict(gen, "readiness"),
                    initial=True,
                    initial_delay_s=spec.readiness.period_s,
                )
            )
        if spec.liveness is not None:
            self._task(probes.run_loop(spec.liveness, self._verdict(gen, "liveness"), initial=True))

    async def _on_verdict(self, v: Verdict) -> None:
        if v.gen != self._gen or self._child is None:
            return
        if v.kind == "startup":
            if v.ok and self.state == State.STARTING:
                self._become_ready(v.gen)
            return  # failures while starting matter only through start_timeout_s
        if v.kind == "liveness":
            self._live = v.ok
            if not v.ok:
                why = f"liveness probe failed: {v.detail}"
                self._note(why)
                self._set(State.UNHEALTHY, why)
                if self.spec.restart.policy != "never":
                    uptime = time.monotonic() - self._child.started_mono
                    await self._stop_child(None)
                    self._after_exit(why, None, uptime_s=uptime)
                return
        else:
            self._ready = v.ok
        if self._ready and self._live:
            self._set(State.HEALTHY, None)
        elif not v.ok:
            why = f"{v.kind} probe failed: {v.detail}"
            self._note(why)
            self._set(State.UNHEALTHY, why)

    async def _on_exited(self, msg: Exited) -> None:
        if msg.gen != self._gen or self._child is None:
            return
        child = self._release_child()
        assert child is not None
        uptime = time.monotonic() - child.started_mono
        self._old_pids = _tree_pids(child, snapshot(child.pid))
        leftovers = kill_now(child.pid, child.tree.values())  # orphans of a crashed leader
        if leftovers:
            await asyncio.to_thread(psutil.wait_procs, leftovers, 2)
        self.last_exit = msg.code
        why = f"exited with {describe_exit(msg.code)}"
        self._note(f"pid {child.pid} {why} after {uptime:.1f}s")
        if self._log is not None:
            await self._log.unfollow()
        pidfile.remove(self.spec.pid_file)
        self._after_exit(why, msg.code, uptime_s=uptime)

    def _after_exit(self, why: str, code: int | None, *, uptime_s: float) -> None:
        """Decide what follows an exit (or a kill for failed probes): stop, fail or back off."""
        pol = self.spec.restart
        if is_stable(pol, uptime_s):
            self._attempt, self._restart_times = 0, []
        if not wants_restart(pol, code):
            if code == 0:
                self._set(State.STOPPED, why)
            else:
                self._fail(f"{why} (restart policy: {pol.policy})")
            return
        now = time.monotonic()
        self._restart_times = recent_restarts(pol, self._restart_times, now)
        give_up = crash_loop(pol, self._restart_times, now)
        if give_up:
            self._fail(f"{give_up}; last: {why}")
            return
        delay = backoff_delay(pol, self._attempt)
        self._attempt += 1
        self.restarts += 1
        self._restart_times.append(now)
        self._note(f"{why}; restart {self.restarts} in {delay:g}s")
        self._set(State.RESTARTING, f"{why}; restarting in {delay:g}s")
        self._timers["respawn"] = asyncio.get_running_loop().call_later(
            delay, self._post, Timer(self._gen, "respawn")
        )

    async def _stop_child(self, grace_s: float | None) -> None:
        child = self._release_child()
        if child is None:
            return
        grace = self.spec.stop_grace_s if grace_s is None else grace_s
        self._old_pids = _tree_pids(child, snapshot(child.pid))
        await stop_tree(child.pid, grace, extra=child.tree.values())
        if child.proc is not None:
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                async with asyncio.timeout(5):
                    await child.proc.wait()
            self.last_exit = child.proc.returncode
        if self._log is not None:
            await self._log.unfollow()
        pidfile.remove(self.spec.pid_file)

    def _release_child(self) -> Child | None:
        """Forget the current process: its helpers stop and its pending messages go stale."""
        child, self._child = self._child, None
        self._gen += 1
        self.pid = None
        self._cancel_timer("start_timeout")
        for t in list(self._tasks):
            t.cancel()
        self._tasks.clear()
        return child

    async def _watch_exit(self, gen: int, child: Child) -> None:
        # event-driven: the child watcher (our child) or a pidfd (adopted) wakes us, no polling
        if child.proc is not None:
            code: int | None = await child.proc.wait()
        else:
            assert child.ps is not None
            await pidfile.wait_exit(child.ps)
            code = None
        self._post(Exited(gen, code))

    async def _track_tree(self, child: Child) -> None:
        await asyncio.sleep(1.0)
        while True:
            known = {pid: p for pid, p in child.tree.items() if p.is_running()}
            for p in snapshot(child.pid):
                known.setdefault(p.pid, p)
            child.tree = known
            await asyncio.sleep(TREE_SCAN_S)

    # ---- helpers ----------------------------------------------------------------------------

    def _verdict(self, gen: int, kind: Literal["startup", "readiness", "liveness"]) -> probes.Verdict:
        def report(ok: bool, detail: str) -> None:
            self._post(Verdict(gen, kind, ok, detail))

        return report

    def _task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_timer(self, what: str) -> None:
        timer = self._timers.pop(what, None)
        if timer is not None:
            timer.cancel()

    def _open_log(self) -> LogFile:
        if self._log is None:
            self._log = LogFile(
                self.spec.log_file,
                max_bytes=self.spec.log_max_bytes,
                backups=self.spec.log_backups,
                lines=self._lines,
                on_line=self.on_line,
            )
        return self._log

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _note(self, text: str) -> None:
        if self._log is not None:
            self._log.note(text)
        log.info("%s: %s", self.spec.name, text)

    def _fail(self, reason: str) -> None:
        out = [ln for ln in self.tail(200) if not ln.startswith(_NOTE)]
        self.last_lines = out[-20:]
        if self.last_lines:
            reason = f"{reason}; last output: {self.last_lines[-1][:200]}"
        self._set(State.FAILED, reason)

    def _set(self, state: State, reason: str | None) -> None:
        if state == self.state:
            return
        previous, self.state, self.reason = self.state, state, reason
        exit_code = self.last_exit if state in (State.STOPPED, State.FAILED, State.RESTARTING) else None
        self._hub.publish(
            StateEvent(
                self.spec.name, state, previous, time.time(), self.pid, self.restarts, reason, exit_code
            )
        )


def _tree_pids(child: Child, now: list[psutil.Process]) -> list[int]:
    """The root's PID first, then every descendant recorded or seen now."""
    rest = {p.pid for p in now} | set(child.tree)
    rest.discard(child.pid)
    return [child.pid, *sorted(rest)]
