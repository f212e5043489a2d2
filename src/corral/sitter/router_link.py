"""Tell a router directly (SGLang style) when the backend joins or leaves rotation.

``POST {router}/add_worker?url=...`` once healthy, ``POST /remove_worker?url=...`` when it
crashes or stops. The desired membership is kept; one task retries with backoff until the router
agrees, so an unreachable router only delays the change.

SGLang's router since 0.2 (sgl-model-gateway) dropped those two routes (404) for
``POST /workers {"url": ...}`` and ``DELETE /workers/{uuid}`` (ids from ``GET /workers``); the
link switches to that API the first time a legacy route is missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp

from corral.sitter.backoff import Backoff

log = logging.getLogger("corral.sitter")


class RouterLink:
    """Keeps ``worker_url``'s membership in the router at ``router_url`` equal to ``want``."""

    def __init__(self, router_url: str, worker_url: str, token: str | None = None, ssl: Any = None) -> None:
        self.router_url = router_url.rstrip("/")
        self._ssl = ssl  # an SSLContext trusting --ca for an https router (None: defaults)
        # `corral router --admin-token` guards add_worker/remove_worker with a Bearer token.
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.worker_url = worker_url
        self.wanted = False
        self.member: bool | None = None  # None: unknown (never told the router)
        self.last_error: str | None = None
        self._workers_api = False  # the router only has SGLang's newer /workers API
        self._wake = asyncio.Event()

    def _connector(self) -> aiohttp.TCPConnector | None:
        return aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None

    def want(self, member: bool) -> None:
        """Ask for the worker to be in (True) or out of (False) the router's rotation."""
        if member != self.wanted:
            self.wanted = member
            self._wake.set()

    async def run(self) -> None:
        """Reconcile forever (cancel to stop)."""
        backoff = Backoff(initial=0.1, maximum=5.0)
        timeout = aiohttp.ClientTimeout(total=3)
        async with aiohttp.ClientSession(
            timeout=timeout, headers=self._headers, connector=self._connector()
        ) as session:
            while True:
                self._wake.clear()
                delay: float | None = None
                if self.member != self.wanted and (self.wanted or self.member is not None):
                    try:
                        await self._send(session, self.wanted)
                        backoff.reset()
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        delay = backoff.next()
                        message = _describe(exc)
                        if message != self.last_error:
                            log.warning("router %s: %s (retrying)", self.router_url, message)
                        self.last_error = message
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                except TimeoutError:
                    pass

    async def _send(self, session: aiohttp.ClientSession, add: bool) -> None:
        path = "/add_worker" if add else "/remove_worker"
        if not self._workers_api:
            async with session.post(f"{self.router_url}{path}", params={"url": self.worker_url}) as r:
                body = (await r.text())[:200]
                if r.status in (404, 405) and not _already(body, add):
                    self._workers_api = True  # no such route: a newer SGLang router
                    log.info("router %s has no %s; using its /workers API", self.router_url, path)
                # A router that already has (or never had) the worker is in the state we want.
                elif r.status >= 300 and not (r.status in (400, 404, 409) and _already(body, add)):
                    raise aiohttp.ClientResponseError(
                        r.request_info, (), status=r.status, message=f"{path}: {body}"
                    )
        if self._workers_api:
            await (self._add_new(session) if add else self._remove_new(session))
        self.member = add
        self.last_error = None
        log.info("router %s: %s %s", self.router_url, path.lstrip("/"), self.worker_url)

    async def _add_new(self, session: aiohttp.ClientSession) -> None:
        # 202: queued; the router adds the worker once its own health check passes (an
        # "already exists" job fails harmlessly inside the router).
        async with session.post(f"{self.router_url}/workers", json={"url": self.worker_url}) as r:
            _check(r, "POST /workers", (await r.text())[:200])

    async def _remove_new(self, session: aiohttp.ClientSession) -> None:
        async with session.get(f"{self.router_url}/workers") as r:
            body = await r.text()
            _check(r, "GET /workers", body[:200])
            try:
                listed = [w for w in json.loads(body)["workers"] if isinstance(w, dict)]
            except (ValueError, KeyError, TypeError):
                raise aiohttp.ClientResponseError(
                    r.request_info, (), status=r.status, message=f"GET /workers: no worker list: {body[:200]}"
                ) from None
        for worker in listed:
            if str(worker.get("url", "")).rstrip("/") == self.worker_url and worker.get("id"):
                async with session.delete(f"{self.router_url}/workers/{worker['id']}") as r:
                    if r.status != 404:  # 404: already gone
                        _check(r, "DELETE /workers", (await r.text())[:200])

    async def leave(self, timeout: float = 2.0) -> None:
        """Remove the worker now (shutdown), once, bounded by ``timeout``."""
        self.wanted = False
        if self.member is False:
            return
        try:
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout),
                headers=self._headers,
                connector=self._connector(),
            ) as session:
                await self._send(session, False)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("router %s: remove_worker failed: %s", self.router_url, exc or type(exc).__name__)


def _check(r: aiohttp.ClientResponse, what: str, body: str) -> None:
    if r.status >= 300:
        raise aiohttp.ClientResponseError(r.request_info, (), status=r.status, message=f"{what}: {body}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status} {exc.message}"
    return str(exc) or type(exc).__name__


def _already(body: str, add: bool) -> bool:
    text = body.lower()
    if add:
        return "already" in text or "exists" in text
    return "not found" in text or "not_found" in text or "no worker" in text or "no static worker" in text
