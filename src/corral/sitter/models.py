"""The backend's model list, read from its ``/v1/models`` once ready and every 30 s after."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

log = logging.getLogger("corral.sitter")


def model_ids(doc: Any) -> list[str]:
    """Ids from an OpenAI model list (``{"data": [{"id": ..}]}``, or a bare list)."""
    items = doc.get("data") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        return []
    return [str(m["id"]) for m in items if isinstance(m, dict) and m.get("id")]


async def fetch_models(session: aiohttp.ClientSession, backend_url: str) -> Any:
    """GET ``{backend_url}/v1/models`` as JSON (raises aiohttp errors, TimeoutError)."""
    async with session.get(f"{backend_url}/v1/models") as r:
        r.raise_for_status()
        return await r.json(content_type=None)


class ModelWatcher:
    """Refreshes the model list when asked (backend ready) and every ``period_s`` while healthy."""

    def __init__(
        self,
        backend_url: str,
        is_ready: Callable[[], bool],
        on_change: Callable[[list[str]], None],
        period_s: float = 30.0,
    ) -> None:
        self.backend_url = backend_url
        self.is_ready = is_ready
        self.on_change = on_change
        self.period_s = period_s
        self.models: list[str] = []
        self.document: Any = None
        self._kick = asyncio.Event()

    def refresh(self) -> None:
        """Read the list again now."""
        self._kick.set()

    async def run(self) -> None:
        """Refresh forever (cancel to stop)."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while True:
                try:
                    await asyncio.wait_for(self._kick.wait(), timeout=self.period_s)
                except TimeoutError:
                    pass
                self._kick.clear()
                if not self.is_ready():
                    continue
                try:
                    doc = await fetch_models(session, self.backend_url)
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    log.warning("GET %s/v1/models failed: %s", self.backend_url, exc or type(exc).__name__)
                    continue
                self.document = doc
                ids = model_ids(doc)
                if ids and ids != self.models:
                    log.info("backend serves models %s", ids)
                    self.models = ids
                    self.on_change(ids)
