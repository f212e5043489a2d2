"""One Prometheus view (and one on-demand activity view) over the router's worker processes.

Each worker keeps its own plain counters (no shared memory, nothing on the hot path) and
serves its exposition text on a unix socket in a directory the workers share. ``GET /metrics``
on any worker reads every sibling's text and merges them: counters, histograms and most
gauges are summed per series; the per-instance state gauges (healthy, circuit) take the
maximum ("some worker routes to it", "the worst circuit"). Reading siblings costs a few
hundred microseconds per scrape, never anything per request.

The on-demand models' activity (``GET /admin/models``, read by the launcher to unload idle
models) is shared the same way on a second socket per worker: a model is idle only when every
worker says so, and drained only once every worker has seen the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

log = logging.getLogger("corral.router")

_MAX_GAUGES = frozenset(("corral_router_instance_healthy", "corral_router_circuit_state"))
_READ_TIMEOUT_S = 1.0


def socket_path(peers_dir: Path, index: int, what: str = "metrics") -> Path:
    """The unix socket worker ``index`` serves its ``what`` (metrics, activity) on."""
    return peers_dir / f"{what}-{index}.sock"


async def serve_own(
    peers_dir: Path, index: int, render: Callable[[], bytes], what: str = "metrics"
) -> asyncio.AbstractServer:
    """Serve ``render()`` to whoever connects to this worker's socket (then close)."""
    path = socket_path(peers_dir, index, what)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a previous incarnation of this worker

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(render())
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_unix_server(answer, path=str(path))


async def _read(path: Path) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        return await reader.read()
    finally:
        writer.close()


async def siblings(peers_dir: Path, index: int, what: str = "metrics") -> list[bytes]:
    """What every sibling worker that answers within a second serves as ``what``."""
    own_path = socket_path(peers_dir, index, what)
    paths = [p for p in sorted(peers_dir.glob(f"{what}-*.sock")) if p != own_path]  # noqa: ASYNC240 - tmpfs, tiny
    texts: list[bytes] = []
    if paths:
        async with asyncio.timeout(_READ_TIMEOUT_S * 2):
            results = await asyncio.gather(
                *(asyncio.wait_for(_read(p), _READ_TIMEOUT_S) for p in paths), return_exceptions=True
            )
        for p, r in zip(paths, results, strict=True):
            if isinstance(r, bytes):
                texts.append(r)
            else:  # a worker being restarted: its counters are gone with it anyway
                log.debug("%s of %s: %r", what, p.name, r)
    return texts


async def gather(peers_dir: Path, index: int, own: bytes) -> bytes:
    """This worker's metrics text merged with every sibling's that answers within a second."""
    return merge([own, *await siblings(peers_dir, index)])


def merge_activity(docs: Iterable[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per-worker on-demand activity merged (pure): requests in flight and held summed, idle
    seconds the least, and ``draining`` only once every worker that knows the model says so."""
    out: dict[str, dict[str, Any]] = {}
    for doc in docs:
        for model, a in doc.items():
            m = out.get(model)
            if m is None:
                out[model] = dict(a)
                continue
            m["in_flight"] += a["in_flight"]
            m["held"] += a["held"]
            m["idle_s"] = min(m["idle_s"], a["idle_s"])
            if a["state"] != "draining":
                m["state"] = a["state"]
    return out


async def gather_activity(
    peers_dir: Path, index: int, own: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """This worker's on-demand activity merged with every sibling's."""
    docs = [own]
    for raw in await siblings(peers_dir, index, "activity"):
        with contextlib.suppress(ValueError):
            doc = json.loads(raw)
            if isinstance(doc, dict):
                docs.append(doc)
    return merge_activity(docs)


def merge(texts: Iterable[bytes]) -> bytes:
    """Prometheus exposition texts merged into one (series summed; state gauges: max)."""
    from prometheus_client.parser import text_string_to_metric_families  # --workers only: lazily

    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text.decode()):
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                values[fam.name] = {}
            series = values[fam.name]
            use_max = fam.type == "gauge" and fam.name in _MAX_GAUGES
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                old = series.get(key)
                if old is None:
                    series[key] = s.value
                else:
                    series[key] = max(old, s.value) if use_max else old + s.value
    for name, fam in families.items():
        for (sample, labels), value in values[name].items():
            fam.add_sample(sample, dict(labels), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))  # type: ignore[arg-type]
    return generate_latest(registry)


class _Fixed:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        return iter(self.families)


def peers_dir_from_env() -> Path | None:
    """The shared directory the parent gave its workers (None: a single process)."""
    value = os.environ.get("CORRAL_ROUTER_PEERS_DIR")
    return Path(value) if value else None
