"""corral.registry.client against real `corral registry` processes: watch, resume, restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

from corral.registry import Heartbeater, RegistryClient, RegistryView, WatchEvent
from support import CorralProcs, wait_http, wait_until


def start(procs: CorralProcs, port: int, *args: str) -> subprocess.Popen[bytes]:
    p = procs.start("registry", "--port", str(port), *args)
    wait_http(f"http://127.0.0.1:{port}/health", timeout=30)
    return p


def stop(p: subprocess.Popen[bytes]) -> None:
    os.kill(p.pid, signal.SIGTERM)
    # uvicorn re-raises the signal after a graceful shutdown, so -SIGTERM is a clean exit
    assert p.wait(timeout=15) in (0, -signal.SIGTERM)


async def next_event(events: AsyncIterator[WatchEvent], timeout: float = 10) -> WatchEvent:
    return await asyncio.wait_for(anext(events), timeout)


async def until(pred: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {pred}"
        await asyncio.sleep(0.02)


async def test_watch_delivers_every_change_in_order_and_resumes(procs: CorralProcs, port: int) -> None:
    start(procs, port)
    async with RegistryClient(f"http://127.0.0.1:{port}") as c:
        events = c.watch(since=0)
        snap = await next_event(events)
        assert snap.type == "snapshot" and snap.instances == []
        reg = await c.register("w", "http://127.0.0.1:8200", ["wm"], id="w-1")
        t0 = time.monotonic()
        await c.update("w-1", state="healthy", metadata={"max_concurrency": 2})
        await c.deregister("w-1")
        got = [await next_event(events) for _ in range(3)]
        assert [(e.type, e.revision) for e in got] == [
            ("put", reg.revision),
            ("put", reg.revision + 1),
            ("delete", reg.revision + 2),
        ]
        assert got[1].instance is not None and got[1].instance["state"] == "healthy"
        assert time.monotonic() - t0 < 5
        await events.aclose()

        # resume from a revision: exactly the missed events, no snapshot
        resumed = c.watch(since=reg.revision)
        assert [(e.type, e.revision) for e in [await next_event(resumed) for _ in range(2)]] == [
            ("put", reg.revision + 1),
            ("delete", reg.revision + 2),
        ]
        await resumed.aclose()


async def test_push_latency_is_milliseconds(procs: CorralProcs, port: int) -> None:
    start(procs, port)
    async with RegistryClient(f"http://127.0.0.1:{port}") as c:
        reg = await c.register("lat", "http://127.0.0.1:8210", ["m"])
        events = c.watch(since=reg.revision)
        lags = []
        for i in range(20):
            await asyncio.sleep(0.01)
            t0 = time.perf_counter()
            await c.update(reg.id, metadata={"i": i})
            e = await next_event(events)
            lags.append(time.perf_counter() - t0)
            assert e.instance is not None and e.instance["metadata"]["i"] == i
        await events.aclose()
        lags.sort()
        # median PATCH -> event round trip; a few ms on an idle machine, generous for CI contention
        assert lags[len(lags) // 2] < 0.25, lags


async def test_watcher_too_far_behind_gets_a_snapshot(procs: CorralProcs, port: int) -> None:
    start(procs, port, "--history", "5")
    async with RegistryClient(f"http://127.0.0.1:{port}") as c:
        first = await c.register("far", "http://127.0.0.1:8220", ["m"])
        for i in range(8):
            await c.update(first.id, metadata={"i": i})
        events = c.watch(since=first.revision)
        e = await next_event(events)
        assert e.type == "snapshot" and e.revision == first.revision + 8
        assert [i["metadata"] for i in e.instances] == [{"i": 7}]
        await events.aclose()


async def test_snapshot_survives_restart_and_revision_stays_monotonic(
    procs: CorralProcs, port: int, tmp_path: Path
) -> None:
    p = start(procs, port, "--state-dir", str(tmp_path))
    async with RegistryClient(f"http://127.0.0.1:{port}") as c:
        await c.register(
            "keep", "http://127.0.0.1:8230", ["k"], state="healthy", lease_ttl_s=120, id="keep-1"
        )
        short = await c.register("short", "http://127.0.0.1:8240", ["s"], lease_ttl_s=1.0, id="short-1")
        rev = short.revision
        stop(p)
        assert (tmp_path / "registry-snapshot.json").exists()
        wait_until(lambda: time.time() > short.expires_at + 0.05, what="the short lease to run out")
        start(procs, port, "--state-dir", str(tmp_path))
        ids = {i["id"] for i in await c.list()}
        assert ids == {"keep-1"}
        assert (await c.models()) == ["k"]
        again = await c.register("new", "http://127.0.0.1:8250", id="new-1")
        assert again.revision > rev


async def test_heartbeater_reregisters_after_restart_without_state(procs: CorralProcs, port: int) -> None:
    p = start(procs, port)
    async with RegistryClient(f"http://127.0.0.1:{port}", timeout_s=2) as c:
        hb = Heartbeater(c, service="hb", url="http://127.0.0.1:8260", models=["hm"], interval_s=0.2)
        async with hb:
            await asyncio.wait_for(hb.registered.wait(), 20)
            iid = hb.id
            assert iid is not None
            stop(p)
            # the desired state changes while the registry is down; it must be what arrives later
            hb.set(state="healthy", metadata={"max_concurrency": 8})
            await until(lambda: not hb.registered.is_set())
            start(procs, port)
            await until(lambda: hb.registrations >= 2)
            inst = await c.get(iid)
            assert inst["state"] == "healthy" and inst["metadata"] == {"max_concurrency": 8}
            hb.set(state="unhealthy")
            await until(lambda: hb._sent == hb._version)
            assert (await c.get(iid))["state"] == "unhealthy"
        assert await c.list(service="hb") == []  # deregistered on exit


async def test_view_follows_across_registry_restart(procs: CorralProcs, port: int) -> None:
    p = start(procs, port)
    seen: list[str] = []
    async with RegistryClient(f"http://127.0.0.1:{port}", timeout_s=2) as c:
        old = await c.register("v", "http://127.0.0.1:8270", ["vm"], state="healthy")
        async with RegistryView(c, on_change=lambda ch: seen.append(ch.type)) as view:
            await view.wait_synced(20)
            assert [i["id"] for i in view.healthy("vm")] == [old.id]
            changes = view.changes()
            pending = asyncio.ensure_future(anext(changes))
            new = await c.register("v", "http://127.0.0.1:8280", ["vm"], state="healthy")
            ch = await asyncio.wait_for(pending, 10)
            assert ch.type == "put" and ch.previous is None and ch.instance is not None
            assert ch.instance["id"] == new.id
            stop(p)
            start(procs, port)  # fresh, no state: the view must resync, not keep ghosts
            other = await c.register("v", "http://127.0.0.1:8290", ["vm"], state="healthy")
            await until(lambda: set(view.instances) == {other.id})
            assert seen.count("snapshot") >= 2
            await changes.aclose()


async def test_calls_and_watch_fail_over_to_the_next_registry(procs: CorralProcs, port: int) -> None:
    # The first URL has nothing listening (a dead registry): calls and the watch go on to the next.
    from support import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    start(procs, port)
    async with RegistryClient([dead, f"http://127.0.0.1:{port}"], timeout_s=1.0) as c:
        reg = await c.register("fo", "http://127.0.0.1:8230", ["fm"], id="fo-1")
        assert c.base_url.endswith(f":{port}") and reg.id == "fo-1"
        await c.heartbeat("fo-1")  # stays on the one that answered
        assert c.base_url.endswith(f":{port}")
    async with RegistryClient(f"{dead},http://127.0.0.1:{port}", timeout_s=1.0) as w:
        events = w.watch(since=0)
        snap = await next_event(events)
        assert snap.type == "snapshot" and [i["id"] for i in snap.instances] == ["fo-1"]
        await events.aclose()
