"""Supervisor: one asyncio task owns one process's state machine.

Everything that changes state arrives as a message in one inbox: commands from callers
(start/stop/restart/detach, each with a future the caller awaits), process exits, probe verdicts
and timers. The owner task handles them one at a time, so concurrent callers are safe and no lock
is needed (llama-swap's process command pattern). Messages carry the generation of the process
they concern; a message about an earlier process is ignored.

This module is the state machine; the steps it delegates live beside it: ``restart`` (what
follows an exit, the before_restart gate), ``probing`` (which probes run when, what a verdict
means), ``watch`` (adoption, exit watch, tree records) and ``sampling`` (cpu/memory for ``info``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Literal

import psutil

from corral.proc import pidfile, probes
from corral.proc.decide import describe_exit
from corral.proc.events import EventHub, State, StateEvent, Subscription
from corral.proc.logs import LineCallback, LogFile
from corral.proc.messages import Child, Cmd, Exited, Gate, Msg, Timer, Verdict
from corral.proc.probing import Health, judge, running_loops, startup_loop
from corral.proc.restart import Backoff, BeforeRestart, after_exit, ask_gate
from corral.proc.sampling import status
from corral.proc.spec import ProcessSpec
from corral.proc.tree import kill_now, stop_tree
from corral.proc.watch import TREE_SCAN_S, adopt, start_child, track_tree, tree_pids, wait_exit

__all__ = ["TREE_SCAN_S", "BeforeRestart", "Supervisor"]

log = logging.getLogger(__name__)

_NOTE = "[corral] "


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
        self.ready_s: float | None = None  # the last start: seconds from spawn to ready
        self.started_at: float | None = None
        self.last_exit: int | None = None
        self.reason: str | None = None
        self.last_lines: list[str] = []  # the output kept when it FAILED
        self.on_line = on_line
        self._lines: deque[str] = deque(maxlen=tail_lines)
        self._hub: EventHub[StateEvent] = EventHub()
        self._inbox: asyncio.Queue[Msg] | None = None
        self._owner: asyncio.Task[None] | None = None
        self._gen = 0
        self._child: Child | None = None
        self._log: LogFile | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._backoff = Backoff()  # restarts since the last stable run: delay and crash loop
        self._health = Health()
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

    def _subscribe(self) -> Subscription[StateEvent]:
        return self._hub.subscribe()

    def tail(self, n: int = 100) -> list[str]:
        """The last ``n`` output lines (supervisor notes start with ``[corral]``)."""
        if self._log is not None:
            self._log.drain()
        return list(self._lines)[-n:] if n > 0 else []

    def info(self) -> dict[str, Any]:
        """A snapshot for status views: pid, state, restarts, uptime, cpu, memory, children."""
        return status(self, self._child)

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
            elif msg.what == "settle" and self._child is not None and self.state == State.STARTING:
                self._become_ready(msg.gen)
            elif msg.what == "start_timeout" and self._child is not None and self.state == State.STARTING:
                why = f"not ready within start_timeout_s={self.spec.start_timeout_s:g}s"
                self._note(why)
                await self._stop_child(None)
                self._after_exit(why, None, uptime_s=0.0, failed_start=True)

    # ---- commands ---------------------------------------------------------------------------

    async def _cmd_start(self, cmd: Cmd) -> None:
        if self._child is not None or self._gate is not None or "respawn" in self._timers:
            return
        self._backoff = Backoff()
        self.last_lines = []
        if self.before_restart is not None and self._old_pids:
            self._set(State.RESTARTING, "start requested")
            await self._relaunch()
        else:
            await self._launch(adopt_running=True)

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
        self._backoff = Backoff()
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
            await self._launch(adopt_running=False)
            return
        self._gate = asyncio.get_running_loop().create_task(self._ask_gate(self._gen, old))

    async def _ask_gate(self, gen: int, old: list[int]) -> None:
        assert self.before_restart is not None
        self._post(Gate(gen, await ask_gate(self.before_restart, self.spec.name, old)))

    async def _on_gate(self, msg: Gate) -> None:
        if msg.gen != self._gen or self._gate is None:
            return  # cancelled by a later command
        self._gate = None
        if msg.veto is not None:
            self._note(f"not restarting: {msg.veto}")
            self._fail(msg.veto)
        elif self._child is None:
            await self._launch(adopt_running=False)

    def _cancel_gate(self) -> None:
        if self._gate is not None:
            self._gate.cancel()
            self._gate = None
            self._gen += 1  # its answer, if already posted, is now stale

    async def _launch(self, *, adopt_running: bool) -> None:
        spec = self.spec
        self._gen += 1
        gen = self._gen
        logf = self._open_log()
        child = adopt(spec) if adopt_running else None
        if child is not None:
            self._note(f"adopted running pid {child.pid}")
        else:
            started = await start_child(spec, logf.write_fd)
            if isinstance(started, str):  # command not found, port taken, ...
                self._note(started)
                self._fail(started)
                return
            child = started
            self._note(f"started pid {child.pid}: {' '.join(spec.argv)}")
        self._child = child
        self.pid, self.started_at = child.pid, child.started_at
        self._health = Health()
        logf.follow()
        self._task(self._watch_exit(gen, child))
        self._task(track_tree(child))
        self._set(State.STARTING, "adopted" if child.proc is None else "spawned")
        if spec.readiness is None:
            self._settle(gen, child)
            return
        self._task(startup_loop(spec, self._verdict(gen, "startup")))
        self._timers["start_timeout"] = asyncio.get_running_loop().call_later(
            spec.start_timeout_s, self._post, Timer(gen, "start_timeout")
        )

    def _settle(self, gen: int, child: Child) -> None:
        """Without a readiness probe: HEALTHY once up for ``settle_s``; a timer that races the
        exit watch (whichever message arrives first wins; the other is then stale)."""
        left = self.spec.settle_s - (time.monotonic() - child.started_mono)  # adopted: already up
        if left <= 0:
            self._become_ready(gen)
            return
        self._timers["settle"] = asyncio.get_running_loop().call_later(left, self._post, Timer(gen, "settle"))

    def _become_ready(self, gen: int) -> None:
        if self._child is not None:
            self.ready_s = round(time.monotonic() - self._child.started_mono, 4)
        self._cancel_timer("settle")
        self._cancel_timer("start_timeout")
        self._health = Health(ready=True, live=True)
        self._set(State.HEALTHY, None)
        for loop in running_loops(self.spec, lambda kind: self._verdict(gen, kind)):
            self._task(loop)

    async def _on_verdict(self, v: Verdict) -> None:
        if v.gen != self._gen or self._child is None:
            return
        outcome = judge(v, self.state, self._health, self.spec.restart.policy)
        if outcome == "ready":
            self._become_ready(v.gen)
        elif outcome == "healthy":
            self._set(State.HEALTHY, None)
        elif outcome in ("unhealthy", "kill"):
            why = f"{v.kind} probe failed: {v.detail}"
            self._note(why)
            self._set(State.UNHEALTHY, why)
            if outcome == "kill":  # a failed liveness probe: restart per policy
                uptime = time.monotonic() - self._child.started_mono
                await self._stop_child(None)
                self._after_exit(why, None, uptime_s=uptime)

    async def _on_exited(self, msg: Exited) -> None:
        if msg.gen != self._gen or self._child is None:
            return
        child = self._release_child()
        assert child is not None
        uptime = time.monotonic() - child.started_mono
        self._old_pids = tree_pids(child)
        leftovers = kill_now(child.pid, child.tree.values())  # orphans of a crashed leader
        self.last_exit = msg.code
        why = f"exited with {describe_exit(msg.code)}"
        code, ran = msg.code, uptime
        failed_start = self.state == State.STARTING  # never became ready in this run
        if self.state == State.STARTING and self.spec.readiness is None:
            # Gone before settle_s: a failed start even with status 0 (None: the policy's
            # "unknown status", which on-failure restarts and never fails).
            why = f"{why} before settle_s={self.spec.settle_s:g}s (failed start)"
            code = None if code == 0 else code
            ran = 0.0  # a failed start never counts as a stable run
        self._note(f"pid {child.pid} {why} after {uptime:.1f}s")
        if self._log is not None:
            await self._log.unfollow()
        pidfile.remove(self.spec.pid_file)
        # The new state first: a view must not show a dead process as healthy while the orphans
        # die. A respawn this schedules is a later message, handled once they are gone.
        self._after_exit(why, code, uptime_s=ran, failed_start=failed_start)
        if leftovers:
            await asyncio.to_thread(psutil.wait_procs, leftovers, 2)

    def _after_exit(self, why: str, code: int | None, *, uptime_s: float, failed_start: bool = False) -> None:
        """Decide what follows an exit (or a kill for failed probes): stop, fail or back off."""
        step = after_exit(
            self.spec.restart,
            self._backoff,
            why,
            code,
            uptime_s=uptime_s,
            now=time.monotonic(),
            failed_start=failed_start,
        )
        self._backoff = step.backoff
        if step.action == "stop":
            self._set(State.STOPPED, step.reason)
            return
        if step.action == "fail":
            self._fail(step.reason)
            return
        delay = step.delay_s
        self.restarts += 1
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
        self._old_pids = tree_pids(child)
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
        self._cancel_timer("settle")
        for t in list(self._tasks):
            t.cancel()
        self._tasks.clear()
        return child

    async def _watch_exit(self, gen: int, child: Child) -> None:
        self._post(Exited(gen, await wait_exit(child)))

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
