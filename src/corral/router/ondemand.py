"""Models started on demand: the router holds a request for a sleeping model and wakes it.

The launcher publishes each on-demand model in the registry as an entry of kind ``model``: its
``url`` is the wake URL on the launcher's control API, ``state`` is one of stopped, loading,
ready, draining, failed, and ``metadata`` carries ``reason``, ``replicas``, ``replicas_ready``,
``cold_start_timeout_s`` and ``generation`` (bumped by the launcher on every wake). The router:

1. holds a request for such a model while it has no healthy instance (or is draining): the held
   request counts toward the queue bound, waits at most ``cold_start_timeout_s``, and leaves at
   once when its client does (the handler task is cancelled, its future with it);
2. calls the wake URL once per model however many requests are held (with the control token
   from ``$CORRAL_CONTROL_TOKEN``); the launcher answers 202 with the wake's ``generation``, or
   an error (nothing can be freed on the GPUs, ...) that every held request gets as a 503;
3. lets held requests go, in arrival order, as soon as the registry shows a healthy instance; a
   ``failed`` state of the same or a later generation answers them all with 503 and the reason.

It also counts, for on-demand models only, requests in flight and when the last one ended:
``GET /admin/models`` serves that to the launcher, which unloads idle models (see
``corral.launcher.ondemand``). The router never imports the launcher.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from typing import Any

import aiohttp

from corral.router.pool import Pool

log = logging.getLogger("corral.router")

TOKEN_ENV = "CORRAL_CONTROL_TOKEN"
STATES = ("stopped", "loading", "ready", "draining", "failed")
_WAKE_TIMEOUT = aiohttp.ClientTimeout(total=10.0)


class ModelUnavailable(Exception):
    """The model could not be made ready: answer the held request 503 with this message."""

    def __init__(self, message: str, code: str = "model_unavailable") -> None:
        super().__init__(message)
        self.code = code


class ModelEntry:
    """One on-demand model as the launcher publishes it, plus the router's own activity counts."""

    __slots__ = (
        "cold_start_timeout_s",
        "generation",
        "id",
        "in_flight",
        "last_end",
        "name",
        "reason",
        "replicas",
        "replicas_ready",
        "state",
        "wake_url",
    )

    def __init__(self, name: str, d: dict[str, Any]) -> None:
        self.name = name
        self.in_flight = 0
        self.last_end = time.time()
        self.update(d)

    def update(self, d: dict[str, Any]) -> None:
        """Take the registry entry's fields (the activity counts stay)."""
        meta = d.get("metadata") or {}
        self.id = str(d.get("id", ""))
        self.wake_url = str(d.get("url", ""))
        state = str(d.get("state", "stopped"))
        self.state = state if state in STATES else "stopped"
        self.reason = meta.get("reason") or None
        self.replicas = int(meta.get("replicas") or 0)
        self.replicas_ready = int(meta.get("replicas_ready") or 0)
        self.cold_start_timeout_s = float(meta.get("cold_start_timeout_s") or 600.0)
        self.generation = int(meta.get("generation") or 0)


class OnDemand:
    """The on-demand models the registry announced, their held requests and their wake calls."""

    def __init__(self, pool: Pool, queue_size: int, token: str | None = None) -> None:
        self.pool = pool
        self.queue_size = queue_size
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.entries: dict[str, ModelEntry] = {}  # model name -> entry
        self._held: dict[str, deque[asyncio.Future[None]]] = {}
        self._waking: dict[str, asyncio.Task[None]] = {}
        self._wake_gen: dict[str, int] = {}  # generation the launcher gave our last accepted wake
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Cancel wake calls and fail nothing: held requests end with their handlers."""
        for t in self._waking.values():
            t.cancel()
        if self._session is not None:
            await self._session.close()

    # -- registry side ---------------------------------------------------------------------------
    def put(self, d: dict[str, Any]) -> None:
        """A ``kind = "model"`` entry was registered or changed."""
        for name in d.get("models") or ():
            e = self.entries.get(name)
            if e is None:
                e = self.entries[name] = ModelEntry(name, d)
            else:
                e.update(d)
            self.check(name)

    def remove(self, entry_id: str) -> None:
        """A model entry left the registry: its models are no longer on demand."""
        for name in [n for n, e in self.entries.items() if e.id == entry_id]:
            del self.entries[name]
            self._fail(name, ModelUnavailable(f"model {name!r} was removed from the fleet"))

    def ids(self) -> set[str]:
        """The registry ids of the entries known."""
        return {e.id for e in self.entries.values()}

    def check(self, model: str) -> None:
        """Release or fail the requests held for ``model`` after any change that may matter."""
        q = self._held.get(model)
        if not q:
            return
        e = self.entries.get(model)
        if e is None:
            return
        if e.state != "draining" and self.pool.has_healthy(model):
            while q:
                fut = q.popleft()
                if not fut.done():
                    fut.set_result(None)
            return
        if e.state == "failed" and model in self._wake_gen and e.generation >= self._wake_gen[model]:
            self._fail(model, ModelUnavailable(f"model {model!r} failed to start: {e.reason or 'unknown'}"))

    def check_models(self, models: tuple[str, ...] | list[str]) -> None:
        """``check`` each of ``models`` that has requests held (an instance changed)."""
        if self._held:
            for m in models:
                if m in self._held:
                    self.check(m)

    # -- request side ----------------------------------------------------------------------------
    def needs_hold(self, model: str) -> bool:
        """Whether a request for ``model`` must wait for a wake (it is on demand and not up)."""
        e = self.entries.get(model)
        return e is not None and (e.state == "draining" or not self.pool.has_healthy(model))

    async def hold(self, model: str) -> None:
        """Wait until ``model`` has a healthy instance, waking it; raise ModelUnavailable if not."""
        e = self.entries[model]
        q = self._held.get(model)
        if q is None:
            q = self._held[model] = deque()
        if sum(len(h) for h in self._held.values()) >= self.queue_size:
            raise ModelUnavailable(f"too many requests waiting for {model!r} to start", "queue_full")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        q.append(fut)
        task = self._waking.get(model)
        if task is None or task.done():
            self._wake_gen.pop(model, None)  # a failure of an earlier wake is no answer to this one
            self._waking[model] = asyncio.create_task(self._wake(model, e.wake_url))
        try:
            await asyncio.wait_for(fut, e.cold_start_timeout_s)
        except TimeoutError:
            raise ModelUnavailable(
                f"model {model!r} did not become ready within {e.cold_start_timeout_s:g}s "
                f"(state {e.state}{': ' + e.reason if e.reason else ''})",
                "cold_start_timeout",
            ) from None
        finally:
            try:
                q.remove(fut)
            except ValueError:
                pass
            if not q and self._held.get(model) is q:
                del self._held[model]

    def started(self, model: str) -> ModelEntry | None:
        """Count a request in flight on an on-demand model (None for other models)."""
        e = self.entries.get(model)
        if e is not None:
            e.in_flight += 1
        return e

    @staticmethod
    def ended(e: ModelEntry) -> None:
        """The request counted by :meth:`started` finished (its end starts the idle clock)."""
        e.in_flight -= 1
        e.last_end = time.time()

    def activity(self) -> dict[str, dict[str, Any]]:
        """Per on-demand model: state, requests in flight, seconds since the last one ended."""
        now = time.time()
        return {
            name: {
                "state": e.state,
                "in_flight": e.in_flight,
                "held": len(self._held.get(name, ())),
                "idle_s": 0.0 if e.in_flight else round(now - e.last_end, 3),
            }
            for name, e in self.entries.items()
        }

    # -- waking ----------------------------------------------------------------------------------
    async def _wake(self, model: str, url: str) -> None:
        """POST the wake URL once; an error answer fails every request held for ``model``."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=_WAKE_TIMEOUT)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with self._session.post(url, headers=headers) as r:
                text = await r.text()
                status = r.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._fail(model, ModelUnavailable(f"cannot wake model {model!r}: {type(exc).__name__} {exc}"))
            return
        doc = _json(text)
        if status >= 300:
            err = doc.get("error")
            msg = (err.get("message") if isinstance(err, dict) else None) or text[:300] or f"HTTP {status}"
            self._fail(model, ModelUnavailable(f"cannot start model {model!r}: {msg}"))
            return
        self._wake_gen[model] = int(doc.get("generation") or 0)
        self.check(model)

    def _fail(self, model: str, exc: ModelUnavailable) -> None:
        q = self._held.get(model)
        while q:
            fut = q.popleft()
            if not fut.done():
                fut.set_exception(exc)


def _json(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
