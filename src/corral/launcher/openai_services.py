"""``[[service]]`` entries with ``openai = true``: the launcher registers their replicas with the
registry as backends, so the router fans requests out over them like over sitters' backends.

Each replica's registration follows its supervisor: registered (``starting``) when spawned,
``healthy``/``unhealthy`` as its probe says, pushed at once through the shared
:class:`corral.registry.Heartbeater`; deregistered when it stops or fails. Models come from the
entry's ``models``, else from the replica's own ``GET /v1/models`` once it is healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from corral.proc.events import State, StateEvent

if TYPE_CHECKING:
    from corral.config import Plan, ProcessPlan
    from corral.registry import Heartbeater, RegistryClient

log = logging.getLogger(__name__)

# The launcher heartbeats these itself; a short lease lets a launcher killed with SIGKILL
# leave no stale backend behind for long.
HEARTBEAT_S = 5.0
_GONE = {State.STOPPED, State.FAILED, State.STOPPING}
_WIRE = {State.HEALTHY: "healthy", State.UNHEALTHY: "unhealthy"}  # anything else: "starting"


async def fetch_models(url: str, timeout_s: float = 3.0) -> list[str]:
    """The ids of ``GET {url}/v1/models`` ([] when it does not answer an OpenAI model list)."""
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s,
            s.get(f"{url}/v1/models") as r,
        ):
            doc: Any = await r.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.warning("could not read %s/v1/models: %s", url, exc)
        return []
    data = doc.get("data") if isinstance(doc, dict) else None
    return [str(m["id"]) for m in data or [] if isinstance(m, dict) and "id" in m]


class OpenAIRegistrar:
    """Holds the registry registrations of every ``openai = true`` service replica."""

    def __init__(self, plan: Plan) -> None:
        registry = plan.get("registry")
        self.registry_url = plan.registry_url
        self.token = registry.token if registry else plan.registry_token
        self.ca = plan.ca
        self._client: RegistryClient | None = None
        self.beats: dict[str, Heartbeater] = {}
        self._models: dict[str, asyncio.Task[None]] = {}

    @staticmethod
    def wants(p: ProcessPlan) -> bool:
        """Whether the launcher registers ``p`` (an OpenAI-speaking service with a URL)."""
        return p.kind == "service" and p.openai and p.url is not None

    async def on_event(self, p: ProcessPlan, ev: StateEvent) -> None:
        """Follow one state change of ``p`` (called in event order by the orchestrator's pump)."""
        if self.registry_url is None:
            return
        hb = self.beats.get(p.name)
        if ev.state in _GONE:
            if hb is not None:
                await self._drop(p.name)
            return
        state = _WIRE.get(ev.state, "starting")
        if hb is None:
            hb = self._start(p, state)
        else:
            hb.set(state=state)
        if ev.state == State.HEALTHY and not p.models and p.name not in self._models:
            self._models[p.name] = asyncio.create_task(self._learn_models(p, hb))

    def _start(self, p: ProcessPlan, state: str) -> Heartbeater:
        from corral.registry import Heartbeater, RegistryClient

        if self._client is None:
            assert self.registry_url is not None
            from corral.tls import client_context

            self._client = RegistryClient(self.registry_url, token=self.token, ssl=client_context(self.ca))
        assert p.url is not None
        hb = Heartbeater(
            self._client,
            service=p.entry,
            url=p.url,
            models=p.models,
            kind="backend",
            state=state,
            metadata={"launcher": True, "process": p.name},
            interval_s=HEARTBEAT_S,
        )
        hb.start()
        self.beats[p.name] = hb
        return hb

    async def _learn_models(self, p: ProcessPlan, hb: Heartbeater) -> None:
        assert p.url is not None
        models = await fetch_models(p.url)
        if models and self.beats.get(p.name) is hb:
            hb.set(models=models)

    async def _drop(self, name: str, deregister: bool = True) -> None:
        task = self._models.pop(name, None)
        if task is not None:
            task.cancel()
        hb = self.beats.pop(name, None)
        if hb is not None:
            await hb.stop(deregister=deregister)

    async def close(self, deregister: bool = True) -> None:
        """Stop heartbeating (deregistering unless told not to) and close the registry client."""
        await asyncio.gather(*(self._drop(n, deregister) for n in list(self.beats)))
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None
