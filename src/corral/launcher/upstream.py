"""What the launcher asks the router and the registry for the dashboard's routing view."""

from __future__ import annotations

from typing import Any

import aiohttp

from corral.config import Plan
from corral.launcher.http_client import session as client_session

_TIMEOUT = aiohttp.ClientTimeout(total=3)


async def _get_json(session: aiohttp.ClientSession, url: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, headers=headers) as r:
        if r.status != 200:
            raise aiohttp.ClientResponseError(r.request_info, (), status=r.status, message=r.reason or "")
        return await r.json()


async def router_view(plan: Plan) -> dict[str, Any]:
    """``{"source": "router", "workers": ...}`` from the router's ``/workers``, else
    ``{"source": "registry", "instances": ...}`` from the registry, else an ``error``."""
    errors = []
    sources = (("router", "/workers", "workers"), ("registry", "/v1/instances", "instances"))
    async with client_session(plan.client_ssl(), timeout=_TIMEOUT) as session:
        for source, path, key in sources:
            proc = plan.get(source)
            if proc is None or not proc.url:
                continue
            try:
                doc = await _get_json(session, f"{proc.url}{path}", proc.token)
                return {"source": source, "url": proc.url, key: doc}
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                errors.append(f"{source}: {exc or type(exc).__name__}")
    return {"source": None, "error": "; ".join(errors) or "no router or registry in this config"}
