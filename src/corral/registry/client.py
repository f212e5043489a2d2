"""Async client of the registry (aiohttp, one ClientSession per client).

Errors, all :class:`RegistryError` (a :class:`corral.errors.CorralError`):
``NotRegistered`` (404: register again), ``RegistryUnavailable`` (cannot connect, timeout,
5xx), and plain ``RegistryError`` for other refusals (401, 4xx validation).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import random
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from corral.errors import CorralError

log = logging.getLogger("corral.registry.client")

DEFAULT_TIMEOUT_S = 5.0
# The server sends a keep-alive line every 5 s; silence for this long means a dead connection.
WATCH_READ_TIMEOUT_S = 20.0


class RegistryError(CorralError):
    """The registry refused or failed a call; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NotRegistered(RegistryError):
    """The registry does not know this instance (404): register it again."""


def short_error(exc: BaseException) -> str:
    """One short phrase for a transport error: ``connection refused`` rather than aiohttp's
    ``ClientConnectorError(ConnectionKey(host=..., ssl=..., ...), ConnectionRefusedError(...))``."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        why = exc.os_error.strerror or type(exc.os_error).__name__
        return f"cannot connect ({why.lower()})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class RegistryUnavailable(RegistryError):
    """The registry could not be reached, timed out, or answered 5xx."""


@dataclass(frozen=True)
class Registration:
    """A granted lease: the instance id, the revision after registering, and the instance."""

    id: str
    revision: int
    lease_ttl_s: float
    expires_at: float
    instance: dict[str, Any]


@dataclass(frozen=True)
class WatchEvent:
    """One line of the watch stream: a ``snapshot`` (``instances``) or a ``put``/``delete`` (``instance``)."""

    type: Literal["snapshot", "put", "delete"]
    revision: int
    instance: dict[str, Any] | None = None
    instances: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> WatchEvent:
        """Parse one decoded watch line."""
        return cls(doc["type"], int(doc["revision"]), doc.get("instance"), doc.get("instances") or [])


def split_urls(urls: str | Sequence[str]) -> list[str]:
    """Registry URLs from a comma-separated string or a list, trailing slashes dropped."""
    parts = urls.split(",") if isinstance(urls, str) else list(urls)
    return [u.strip().rstrip("/") for u in parts if u and u.strip()]


def backoff(attempt: int, initial_s: float, max_s: float) -> float:
    """Jittered exponential backoff (full jitter over the upper half) for retry ``attempt`` >= 1."""
    cap = min(max_s, initial_s * 2 ** min(attempt - 1, 30))
    return cap * random.uniform(0.5, 1.0)


class RegistryClient:
    """Talks to the registries at ``base_url`` (one URL, or several: a list or ``a,b``).

    Several URLs are registries sharing one Redis: a call that cannot reach the current one
    goes on to the next (each try bounded by ``timeout_s``), and the one that answered stays
    current. The watch moves on to the next URL whenever its stream breaks.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        ssl: Any = None,
    ) -> None:
        self.urls = split_urls(base_url)
        if not self.urls:
            raise ValueError("no registry URL given")
        self._current = 0
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._ssl = ssl  # an ssl.SSLContext trusting --ca, or None for the system's defaults
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # never shows the token
        return f"RegistryClient({','.join(self.urls)!r})"

    @property
    def base_url(self) -> str:
        """The registry in use now (the last one that answered)."""
        return self.urls[self._current]

    def _next(self) -> None:
        self._current = (self._current + 1) % len(self.urls)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The one ClientSession, created on first use (inside the running loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None
            self._session = aiohttp.ClientSession(headers=self._headers, connector=connector)
        return self._session

    async def close(self) -> None:
        """Close the session (open watch streams end)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        """One request, failing over between registries; every failure maps to a RegistryError
        (the single error boundary here)."""
        start = self._current  # calls run concurrently: each walks the list from where it began
        n = len(self.urls)
        for i in range(n):
            index = (start + i) % n
            try:
                result = await self._call_one(self.urls[index], method, path, body, params)
            except RegistryUnavailable as exc:
                if i == n - 1:
                    raise
                log.info("%s; trying the next registry", exc)
                continue
            self._current = index
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call_one(
        self, base: str, method: str, path: str, body: dict[str, Any] | None, params: dict[str, Any]
    ) -> Any:
        url = base + path
        query = {k: v for k, v in params.items() if v is not None}
        for attempt in (1, 2):
            try:
                async with self.session.request(
                    method, url, json=body, params=query, timeout=self.timeout
                ) as resp:
                    text = await resp.text()
                    status = resp.status
                break
            except aiohttp.ServerDisconnectedError as exc:
                # A pooled keep-alive connection to a registry that restarted: every call of this
                # API is idempotent (re-register uses the same id), so one retry is safe.
                if attempt == 2:
                    raise RegistryUnavailable(f"registry {base} unreachable: {short_error(exc)}") from exc
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise RegistryUnavailable(f"registry {base} unreachable: {short_error(exc)}") from exc
        if status < 300:
            return json.loads(text) if text else None
        try:
            message = json.loads(text)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = text[:200]
        msg = f"registry {method} {path}: {status} {message}"
        if status == 404:
            raise NotRegistered(msg, status)
        if status >= 500:
            raise RegistryUnavailable(msg, status)
        raise RegistryError(msg, status)

    async def health(self) -> dict[str, Any]:
        """The registry's ``/health`` document."""
        result: dict[str, Any] = await self._call("GET", "/health")
        return result

    async def register(
        self,
        service: str,
        url: str,
        models: Iterable[str] = (),
        *,
        kind: str = "backend",
        state: str = "starting",
        metadata: dict[str, Any] | None = None,
        id: str | None = None,
        lease_ttl_s: float | None = None,
    ) -> Registration:
        """Register (or re-register with the same ``id``) an instance."""
        body: dict[str, Any] = {
            "service": service,
            "kind": kind,
            "url": url,
            "models": list(models),
            "state": state,
            "metadata": metadata or {},
        }
        if id is not None:
            body["id"] = id
        if lease_ttl_s is not None:
            body["lease_ttl_s"] = lease_ttl_s
        doc = await self._call("POST", "/v1/instances", body)
        return Registration(
            doc["id"], doc["revision"], doc["lease_ttl_s"], doc["expires_at"], doc["instance"]
        )

    async def heartbeat(
        self,
        instance_id: str,
        *,
        state: str | None = None,
        models: Iterable[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Renew the lease (and update what is given). Raises NotRegistered when forgotten."""
        body = _changes(state, models, metadata)
        result: dict[str, Any] = await self._call(
            "PUT", f"/v1/instances/{instance_id}/heartbeat", body or None
        )
        return result

    async def update(
        self,
        instance_id: str,
        *,
        state: str | None = None,
        models: Iterable[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Change state/models/metadata (metadata merged; None values delete keys); the instance."""
        result: dict[str, Any] = await self._call(
            "PATCH", f"/v1/instances/{instance_id}", _changes(state, models, metadata)
        )
        return result

    async def drain(self, instance_id: str, draining: bool = True) -> dict[str, Any]:
        """Take an instance out of rotation (``draining``) or put it back; the instance. Routers
        send a draining instance nothing new and let its in-flight requests finish."""
        result: dict[str, Any] = await self._call(
            "PATCH", f"/v1/instances/{instance_id}", {"draining": draining}
        )
        return result

    async def deregister(self, instance_id: str) -> bool:
        """Remove an instance; False when the registry did not know it."""
        try:
            await self._call("DELETE", f"/v1/instances/{instance_id}")
        except NotRegistered:
            return False
        return True

    async def get(self, instance_id: str) -> dict[str, Any]:
        """One instance (NotRegistered when unknown)."""
        result: dict[str, Any] = await self._call("GET", f"/v1/instances/{instance_id}")
        return result

    async def list(
        self,
        *,
        model: str | None = None,
        service: str | None = None,
        state: str | None = None,
        kind: str | None = None,
    ) -> list[dict[str, Any]]:
        """Instances matching every filter given."""
        doc = await self._call("GET", "/v1/instances", model=model, service=service, state=state, kind=kind)
        result: builtins.list[dict[str, Any]] = doc["data"]
        return result

    async def models(self) -> builtins.list[str]:
        """Ids of the models healthy backends serve."""
        doc = await self._call("GET", "/v1/models")
        return [m["id"] for m in doc["data"]]

    async def watch(
        self, since: int = 0, *, backoff_initial_s: float = 0.1, backoff_max_s: float = 5.0
    ) -> AsyncIterator[WatchEvent]:
        """Every change from ``since`` on, forever: reconnects with jittered exponential backoff
        and resumes from the last revision seen. A ``snapshot`` event replaces the whole view."""
        revision = since
        attempt = 0
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout.total, sock_read=WATCH_READ_TIMEOUT_S
        )
        while True:
            try:
                async with self.session.get(
                    f"{self.base_url}/v1/watch", params={"since": revision}, timeout=timeout
                ) as resp:
                    if resp.status != 200:
                        raise RegistryUnavailable(f"watch answered {resp.status}", resp.status)
                    parts: builtins.list[bytes] = []  # an unfinished line (a snapshot spans many chunks)
                    async for chunk in resp.content.iter_any():
                        parts.append(chunk)
                        if b"\n" not in chunk:
                            continue
                        *lines, rest = b"".join(parts).split(b"\n")
                        parts = [rest]
                        for line in lines:
                            if not line.strip():
                                continue  # keep-alive
                            event = WatchEvent.from_json(json.loads(line))
                            revision = event.revision
                            attempt = 0
                            yield event
                log.info("registry watch stream ended; reconnecting from revision %d", revision)
            except (aiohttp.ClientError, TimeoutError, OSError, RegistryUnavailable, ValueError) as exc:
                log.info(
                    "registry watch %s: %s; reconnecting from revision %d",
                    self.base_url,
                    short_error(exc),
                    revision,
                )
            attempt += 1
            self._next()  # with several registries, the next try goes to another one
            await asyncio.sleep(backoff(attempt, backoff_initial_s, backoff_max_s))


def _changes(
    state: str | None, models: Iterable[str] | None, metadata: dict[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if state is not None:
        body["state"] = state
    if models is not None:
        body["models"] = list(models)
    if metadata is not None:
        body["metadata"] = metadata
    return body
