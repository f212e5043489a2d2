"""Two `corral registry --store redis://...` processes on one real redis-server share one view."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from itertools import count

import httpx
import pytest
import redis

from corral.registry import RegistryClient, WatchEvent
from support import CorralProcs, free_port, kill_tree, wait_http, wait_until

_prefixes = count()


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    """A private redis-server on a free port, without persistence; killed at teardown."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail(
            "redis-server is not installed: `apt-get install -y redis-server` "
            "(`make test` installs it when run as root)"
        )
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        client = redis.Redis(port=port, socket_connect_timeout=1)
        wait_until(client.ping, timeout=20, what=f"redis-server on port {port}")
        client.close()
        yield port
    finally:
        kill_tree(proc.pid)


@pytest.fixture
def store(redis_port: int) -> str:
    """A store URL with a key prefix of its own, so tests never see each other's instances."""
    return f"redis://127.0.0.1:{redis_port}/0?prefix=t{next(_prefixes)}:"


def start_registry(procs: CorralProcs, store: str) -> str:
    port = free_port()
    procs.start("registry", "--port", str(port), "--store", store)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/health", timeout=30)
    return base


def body(service: str, port: int, **kw: object) -> dict[str, object]:
    return {"service": service, "url": f"http://127.0.0.1:{port}", "models": ["m-" + service], **kw}


class Watch:
    """Collects a registry's watch events in the background."""

    def __init__(self, base: str, since: int = 0) -> None:
        self.client = RegistryClient(base)
        self.queue: asyncio.Queue[tuple[float, WatchEvent]] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(since))

    async def _run(self, since: int) -> None:
        async for ev in self.client.watch(since):
            self.queue.put_nowait((time.perf_counter(), ev))

    async def next(self, timeout: float = 15.0) -> WatchEvent:
        return (await self.timed(timeout))[1]

    async def timed(self, timeout: float = 15.0) -> tuple[float, WatchEvent]:
        async with asyncio.timeout(timeout):
            return await self.queue.get()

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.client.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
async def watches() -> AsyncIterator[list[Watch]]:
    opened: list[Watch] = []
    yield opened
    for w in opened:
        await w.close()


def test_register_on_a_is_listed_on_b_with_shared_revisions(procs: CorralProcs, store: str) -> None:
    a, b = start_registry(procs, store), start_registry(procs, store)
    revisions = []
    for i, base in enumerate([a, b, a, b]):
        r = httpx.post(base + "/v1/instances", json=body(f"svc{i}", 9000 + i, state="healthy"))
        assert r.status_code == 200, r.text
        revisions.append(r.json()["revision"])
    assert revisions == sorted(set(revisions)) and revisions[-1] - revisions[0] == 3  # one counter

    listed_a, listed_b = httpx.get(a + "/v1/instances").json(), httpx.get(b + "/v1/instances").json()
    assert listed_a["revision"] == listed_b["revision"] == revisions[-1]
    assert sorted(i["id"] for i in listed_a["data"]) == sorted(i["id"] for i in listed_b["data"])
    assert len(listed_b["data"]) == 4
    assert httpx.get(b + "/v1/models").json()["data"][0]["id"] == "m-svc0"

    first = listed_b["data"][0]["id"]
    hb = httpx.put(b + f"/v1/instances/{first}/heartbeat")
    assert hb.status_code == 200 and hb.json()["revision"] == revisions[-1]  # renewal is no change
    patched = httpx.patch(a + f"/v1/instances/{first}", json={"state": "draining", "metadata": {"k": 1}})
    assert patched.status_code == 200 and patched.json()["state"] == "draining"
    assert httpx.get(b + f"/v1/instances/{first}").json()["metadata"] == {"k": 1}
    assert httpx.delete(b + f"/v1/instances/{first}").json()["revision"] == revisions[-1] + 2
    assert httpx.get(a + f"/v1/instances/{first}").status_code == 404
    assert httpx.put(a + f"/v1/instances/{first}/heartbeat").status_code == 404  # register again


async def test_watch_on_b_sees_writes_on_a_in_order_within_ms(
    procs: CorralProcs, store: str, watches: list[Watch]
) -> None:
    a, b = start_registry(procs, store), start_registry(procs, store)
    watches.append(w := Watch(b))
    snap = await w.next()
    assert snap.type == "snapshot" and snap.instances == []
    async with RegistryClient(a) as reg:
        r = await reg.register("lat", "http://127.0.0.1:9100", ["m"], state="starting")
        put = await w.next()
        assert (put.type, put.revision, put.instance and put.instance["id"]) == ("put", r.revision, r.id)

        latencies = []
        for n in range(40):
            t0 = time.perf_counter()
            await reg.update(r.id, metadata={"n": n})
            t1, ev = await w.timed()
            assert ev.type == "put" and ev.instance is not None and ev.instance["metadata"] == {"n": n}
            latencies.append((t1 - t0) * 1000)
        await reg.deregister(r.id)
        gone = await w.next()
        assert gone.type == "delete" and gone.instance is not None and gone.instance["id"] == r.id
    median = statistics.median(latencies)
    print(f"\nwrite on A -> event on B's watch: median {median:.2f} ms, max {max(latencies):.2f} ms")
    assert median < 250  # a few ms on an idle machine; generous for a loaded 2-core CI box


async def test_lease_expiry_is_one_delete_event(
    procs: CorralProcs, store: str, watches: list[Watch], http: httpx.AsyncClient
) -> None:
    a, b = start_registry(procs, store), start_registry(procs, store)
    watches.extend([wa := Watch(a), wb := Watch(b)])
    assert (await wa.next()).type == (await wb.next()).type == "snapshot"
    r = (await http.post(a + "/v1/instances", json=body("short", 9200, lease_ttl_s=0.5))).json()
    for w in (wa, wb):
        assert (await w.next()).type == "put"
    for w in (wa, wb):
        ev = await w.next(timeout=20)
        assert ev.type == "delete" and ev.instance is not None and ev.instance["id"] == r["id"]
        assert ev.revision == r["revision"] + 1
    after = (await http.post(b + "/v1/instances", json=body("after", 9201))).json()
    for w in (wa, wb):  # the next event is the new put: no second delete from the other registry
        ev = await w.next()
        assert (ev.type, ev.revision) == ("put", r["revision"] + 2) == ("put", after["revision"])
    assert (await http.get(a + f"/v1/instances/{r['id']}")).status_code == 404


async def test_registry_restart_loses_nothing_and_watchers_resume(
    procs: CorralProcs, store: str, watches: list[Watch], http: httpx.AsyncClient
) -> None:
    first = CorralProcs()
    try:
        a = start_registry(first, store)
        kept = (await http.post(a + "/v1/instances", json=body("kept", 9300, state="healthy"))).json()
        moved = (await http.post(a + "/v1/instances", json=body("moved", 9301))).json()
        await http.patch(a + f"/v1/instances/{moved['id']}", json={"state": "healthy"})
    finally:
        first.close()  # SIGKILL: nothing is flushed on the way out
    a2 = start_registry(procs, store)
    listed = (await http.get(a2 + "/v1/instances")).json()
    assert {i["id"] for i in listed["data"]} == {kept["id"], moved["id"]}
    assert listed["revision"] == moved["revision"] + 1
    # A watcher that had seen `kept` resumes on the new process: the missed events are replayed.
    watches.append(w := Watch(a2, since=kept["revision"]))
    replayed = [await w.next(), await w.next()]
    assert [(e.type, e.revision) for e in replayed] == [
        ("put", moved["revision"]),
        ("put", moved["revision"] + 1),
    ]
    again = (await http.post(a2 + "/v1/instances", json=body("new", 9302))).json()
    assert again["revision"] == moved["revision"] + 2  # revisions go on from Redis' counter


def test_unreachable_redis_is_one_line_error() -> None:
    url = f"redis://:s3cretpw@127.0.0.1:{free_port()}/0"
    argv = [sys.executable, "-m", "corral", "registry", "--port", str(free_port()), "--store", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "cannot reach Redis at redis://:***@127.0.0.1" in out.stderr
    assert "Traceback" not in out.stderr and "s3cretpw" not in out.stderr


def _private_redis(port: int) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server") or "redis-server"
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = redis.Redis(port=port, socket_connect_timeout=1)
    wait_until(client.ping, timeout=20, what=f"redis-server on port {port}")
    client.close()
    return proc


async def test_redis_gone_reads_served_from_the_local_view_then_an_empty_redis_goes_on(
    procs: CorralProcs,
) -> None:
    port = free_port()
    proc = _private_redis(port)
    try:
        base = start_registry(procs, f"redis://127.0.0.1:{port}/0")
        async with RegistryClient(base, timeout_s=3) as c:
            reg = await c.register("v", "http://127.0.0.1:8301", ["vm"], id="v-1", lease_ttl_s=30)
            events = c.watch(since=reg.revision)
            kill_tree(proc.pid)
            # Reads keep answering what the registry knows; writes are refused (503), not lost.
            assert [i["id"] for i in await c.list()] == ["v-1"]
            assert (await c.get("v-1"))["url"] == "http://127.0.0.1:8301"
            with pytest.raises(Exception, match="503"):
                await c.register("w", "http://127.0.0.1:8302", ["wm"], id="w-1")
            # Redis back with nothing in it: the revision goes on from the wall clock (never
            # back), so the watcher sees the re-registration (the jump in revisions makes it a
            # snapshot: the registry cannot replay what Redis forgot).
            proc = _private_redis(port)
            again = await c.register("v", "http://127.0.0.1:8301", ["vm"], id="v-1", lease_ttl_s=30)
            assert again.revision > reg.revision
            got = await asyncio.wait_for(anext(events), 15)
            assert got.revision == again.revision
            seen = [got.instance] if got.type == "put" else got.instances
            assert [i["id"] for i in seen if i] == ["v-1"]
            await events.aclose()
    finally:
        kill_tree(proc.pid)
