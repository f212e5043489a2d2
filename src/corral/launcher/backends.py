"""What each sitter says about its backend, read from the sitter's ``/health``.

The launcher supervises the sitter process; the sitter supervises the backend. A view built from
the launcher's own supervisor would show the sitter: a backend that failed for good (command not
found, port taken, crash loop) would look "starting" forever, since its sitter is fine, and its
restarts and PID would be the sitter's. So the launcher asks each running sitter how its backend
is doing and the status views show that, the sitter's own state beside it.

Polling, not a push stream: a sitter answers ``/health`` in well under a millisecond, and a
fast poll while a backend is in transition (starting, restarting) turns a failure into a red
card within ~0.3 s, while a steady backend costs one request a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from corral.launcher.http_client import session

log = logging.getLogger(__name__)

FAST_S = 0.25  # while the backend is in transition (or unknown)
STEADY_S = 1.0  # healthy or failed
_STEADY = {"healthy", "failed"}
_STATES = {"stopped", "starting", "healthy", "unhealthy", "restarting", "stopping", "failed"}
_TIMEOUT = aiohttp.ClientTimeout(total=2)


@dataclass(frozen=True)
class BackendStatus:
    """The backend as its sitter reported it (``/health``)."""

    state: str
    pid: int | None
    restarts: int
    reason: str | None
    last_exit: int | None
    started_at: float | None
    sitter_pid: int | None
    last_lines: list[str] = field(default_factory=list)

    def key(self) -> tuple[Any, ...]:
        """What a status view shows: a change of any of these is worth an event."""
        return (self.state, self.pid, self.restarts, self.reason, self.last_exit)


def parse_health(body: Any) -> BackendStatus | None:
    """A sitter's ``/health`` body (200 or 503) -> BackendStatus; None when it is not one."""
    if not isinstance(body, dict) or body.get("backend") not in _STATES:
        return None
    state = "stopping" if body.get("sitter") == "stopping" else str(body["backend"])
    lines = body.get("last_lines")
    return BackendStatus(
        state=state,
        pid=body.get("pid") if isinstance(body.get("pid"), int) else None,
        restarts=int(body.get("restarts") or 0),
        reason=body.get("reason") if isinstance(body.get("reason"), str) else None,
        last_exit=body.get("last_exit") if isinstance(body.get("last_exit"), int) else None,
        started_at=body.get("started_at") if isinstance(body.get("started_at"), int | float) else None,
        sitter_pid=body.get("sitter_pid") if isinstance(body.get("sitter_pid"), int) else None,
        last_lines=[str(x) for x in lines] if isinstance(lines, list) else [],
    )


async def fetch_health(session: aiohttp.ClientSession, url: str) -> BackendStatus | None:
    """GET ``url`` (a sitter's /health); None when the sitter does not answer (yet)."""
    try:
        async with session.get(url) as r:
            return parse_health(await r.json(content_type=None))
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


class BackendWatch:
    """Polls the sitters that run and keeps the last answer of each.

    ``running(name)`` -> the sitter's PID while its process runs (else None: its answer is
    dropped); ``changed(name)`` is called when what a view shows changed. Sitters come and go
    with the plan (``add``/``remove``: a reload).
    """

    def __init__(
        self,
        running: Callable[[str], int | None],
        changed: Callable[[str], None],
        ssl: ssl_.SSLContext | None = None,
    ) -> None:
        self.ssl = ssl  # verifies sitters that serve HTTPS ([corral] tls_cert)
        self.urls: dict[str, str] = {}  # process name -> its sitter's /health URL
        self.running = running
        self.changed = changed
        self.status: dict[str, BackendStatus] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._wake: dict[str, asyncio.Event] = {}
        self._started = False

    def add(self, name: str, url: str) -> None:
        """Watch the sitter ``name`` whose /health is ``url`` (from now on, or once started)."""
        self.urls[name] = url
        self._wake[name] = asyncio.Event()
        if self._started:
            self._spawn(name)

    def remove(self, name: str) -> None:
        """Stop watching ``name`` (removed from the plan)."""
        self.urls.pop(name, None)
        self._wake.pop(name, None)
        self.status.pop(name, None)
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()

    def start(self) -> None:
        """One polling task per sitter (on the running loop)."""
        self._started = True
        for name in self.urls:
            self._spawn(name)

    def _spawn(self, name: str) -> None:
        if self._session is None:
            self._session = session(self.ssl, timeout=_TIMEOUT)
        self._tasks[name] = asyncio.create_task(self._poll(name), name=f"backend {name}")

    def poke(self, name: str) -> None:
        """The sitter process changed state: look again now."""
        ev = self._wake.get(name)
        if ev is not None:
            ev.set()

    def put(self, name: str, got: BackendStatus) -> None:
        """An answer that came another way (an admin call's reply): take it now, and poll soon."""
        if name in self.urls:
            self._set(name, got)
            self.poke(name)

    def get(self, name: str) -> BackendStatus | None:
        """The last answer of ``name``'s sitter while its process runs."""
        got = self.status.get(name)
        if got is None:
            return None
        pid = self.running(name)
        return got if pid is not None and got.sitter_pid in (None, pid) else None

    async def _poll(self, name: str) -> None:
        assert self._session is not None
        wake = self._wake[name]
        url = self.urls[name]
        while True:
            wake.clear()  # before looking: a poke from here on is seen
            period = FAST_S
            pid = self.running(name)
            if pid is None:
                self._set(name, None)
                period = 3600.0  # until poked
            else:
                got = await fetch_health(self._session, url)
                if got is not None and got.sitter_pid not in (None, pid):
                    got = None  # another sitter answers on that port (an old one, or a stranger)
                if got is not None or name not in self.status:
                    self._set(name, got)
                if got is not None and got.state in _STEADY:
                    period = STEADY_S
            # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancel that arrives
            # just as the event is set, and this task would then never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await wake.wait()

    def _set(self, name: str, got: BackendStatus | None) -> None:
        old = self.status.get(name)
        if got is None:
            if old is None:
                return
            del self.status[name]
        else:
            self.status[name] = got
        if (old.key() if old else None) != (got.key() if got else None):
            self.changed(name)

    async def close(self) -> None:
        """Stop polling."""
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._started = False
        if self._session is not None:
            await self._session.close()
            self._session = None


def uptime(b: BackendStatus) -> float | None:
    """Seconds since the backend started (None when not running)."""
    return round(time.time() - b.started_at, 3) if b.pid and b.started_at else None


def merged(sitter: dict[str, Any], backend: BackendStatus | None) -> dict[str, Any]:
    """A sitter process's status as views show it: the backend's state, pid, restarts, reason
    and exit while the sitter runs and has answered, else the sitter's; ``sitter``: the
    sitter's own (``sitter`` holds ``state pid restarts reason last_exit``)."""
    own = {k: sitter.get(k) for k in ("state", "pid", "restarts", "reason", "last_exit")}
    if backend is None:
        # Not answering yet (or not running): its backend's PID and restarts are unknown.
        return {**own, "pid": None, "restarts": 0, "last_exit": None, "sitter": own, "backend": None}
    return {
        "state": backend.state,
        "pid": backend.pid,
        "restarts": backend.restarts,
        "reason": backend.reason,
        "last_exit": backend.last_exit,
        "sitter": own,
        "backend": backend,
    }
