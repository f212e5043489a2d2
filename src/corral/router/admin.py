"""Admin routes (admin token): manage static workers, also in the SGLang router's spelling."""

from __future__ import annotations

import hmac
import json
from pathlib import Path

from corral.router import peers
from corral.router.discovery import Discovery
from corral.router.http import Connection, Handler, Reply, Request
from corral.router.ondemand import OnDemand
from corral.router.pool import Pool
from corral.router.responses import error, json_response

_URL_HELP = 'give the worker as ?url=http://host:port or {"url": ...}'


class Admin:
    """``GET/POST/DELETE /workers``, ``POST /add_worker?url=``, ``POST /remove_worker?url=``,
    ``GET /list_workers``."""

    def __init__(
        self,
        pool: Pool,
        discovery: Discovery,
        token: str | None,
        new_id: object,
        ondemand: OnDemand | None = None,
    ) -> None:
        self.ondemand = ondemand
        self.pool = pool
        self.discovery = discovery
        self.token = token
        self.new_id = new_id
        self.peers: tuple[Path, int] | None = None  # --workers N: (shared dir, this worker's index)

    def routes(self) -> dict[tuple[str, str], Handler]:
        """The admin route table: (method, path) -> handler."""
        return {
            ("GET", "/workers"): self.list_workers,
            ("POST", "/workers"): self.add_worker,
            ("DELETE", "/workers"): self.remove_worker,
            ("GET", "/list_workers"): self.list_workers,
            ("POST", "/add_worker"): self.add_worker,
            ("POST", "/remove_worker"): self.remove_worker,
            ("GET", "/admin/models"): self.model_activity,
        }

    def _rid(self, request: Request) -> str:
        return request.headers.get("x-request-id") or self.new_id()  # type: ignore[operator,no-any-return]

    def _denied(self, request: Request, rid: str) -> Reply | None:
        return self.denied(request, rid)

    def denied(self, request: Request, rid: str) -> Reply | None:
        """The 401 to answer when the request lacks the admin token (None: allowed)."""
        if self.token is None:
            return None
        got = request.headers.get("authorization", "")
        if got.startswith("Bearer ") and hmac.compare_digest(got[7:].encode(), self.token.encode()):
            return None
        return error(401, "admin token required", rid, "invalid_admin_token")

    async def _url(self, request: Request) -> str | None:
        url = request.query.get("url")
        if url is None and request.body:
            try:
                doc = json.loads(request.body)
            except ValueError:
                return None
            url = doc.get("url") if isinstance(doc, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return None
        return url.rstrip("/")

    async def _target(self, request: Request) -> tuple[str, str | Reply]:
        """The request id and the worker URL asked for, or the error to answer."""
        rid = self._rid(request)
        if (denied := self._denied(request, rid)) is not None:
            return rid, denied
        url = await self._url(request)
        if url is None:
            return rid, error(400, _URL_HELP, rid, "invalid_url")
        return rid, url

    async def list_workers(self, request: Request, conn: Connection) -> Reply:
        """Every instance with its health, circuit and load."""
        rid = self._rid(request)
        if (denied := self._denied(request, rid)) is not None:
            return denied
        workers = [i.as_dict() for i in self.pool.instances.values()]
        return json_response({"workers": workers, "urls": [w["url"] for w in workers]}, rid)

    async def add_worker(self, request: Request, conn: Connection) -> Reply:
        """Add a static worker by URL (``?url=`` or JSON ``{"url": ...}``)."""
        rid, url = await self._target(request)
        if isinstance(url, Reply):
            return url
        limit = request.query.get("max_concurrency", "0")
        inst = self.discovery.add_static(url, int(limit) if limit.isdigit() else 0)
        return json_response({"status": "ok", "worker": inst.as_dict()}, rid)

    async def remove_worker(self, request: Request, conn: Connection) -> Reply:
        """Remove a static worker by URL."""
        rid, url = await self._target(request)
        if isinstance(url, Reply):
            return url
        if not self.discovery.remove_static(url):
            return error(404, f"no static worker {url}", rid, "worker_not_found")
        return json_response({"status": "ok", "url": url}, rid)

    async def model_activity(self, request: Request, conn: Connection) -> Reply:
        """Per on-demand model: state as seen here, requests in flight and held, idle seconds.

        The launcher reads this to unload idle models (never one with a request in flight).
        """
        rid = self._rid(request)
        if (denied := self._denied(request, rid)) is not None:
            return denied
        data = self.ondemand.activity() if self.ondemand is not None else {}
        if self.peers is not None:  # --workers N: every worker's requests count
            data = await peers.gather_activity(*self.peers, data)
        return json_response({"models": data}, rid)
