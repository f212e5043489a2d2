"""What the launcher asks the router and the registry for the dashboard's routing view."""

from __future__ import annotations

from typing import Any

import aiohttp

from corral.config import Plan

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
    router = plan.get("router")
    registry = plan.get("registry")
    errors = []
    async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
        if router is not None and router.url:
            token = router.token
            try:
                workers = await _get_json(session, f"{router.url}/workers", token)
                return {"source": "router", "url": router.url, "workers": workers}
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                errors.append(f"router: {exc or type(exc).__name__}")
        if registry is not None and registry.url:
            token = registry.token
            try:
                doc = await _get_json(session, f"{registry.url}/v1/instances", token)
                return {"source": "registry", "url": registry.url, "instances": doc}
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                errors.append(f"registry: {exc or type(exc).__name__}")
    return {"source": None, "error": "; ".join(errors) or "no router or registry in this config"}
