"""MemoryStore, EventLog and the watch stream, in-process (no HTTP)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from corral.registry import snapshot
from corral.registry.events import EventLog
from corral.registry.models import HeartbeatIn, InstanceIn, check_url
from corral.registry.store import MemoryStore
from corral.registry.watch import stream


def spec(name: str = "chat", port: int = 8100, **kw: object) -> InstanceIn:
    return InstanceIn(service=name, url=f"http://127.0.0.1:{port}", models=["m"], **kw)  # type: ignore[arg-type]


def test_replay_window_covers_exactly_the_retained_revisions() -> None:
    log = EventLog(revision=100, history=3)
    for i in range(5):
        log.append("put", {"id": str(i)})
    assert log.revision == 105
    assert log.replay(0) is None  # since=0 always snapshots
    assert log.replay(101) is None  # 102 was dropped from the ring
    missed = log.replay(102)
    assert missed is not None and [r for r, _ in missed] == [103, 104, 105]
    assert log.replay(105) == []
    assert log.replay(106) is None  # from the future: another registry's history


async def test_watcher_that_overflows_gets_a_fresh_snapshot_not_a_blocked_writer() -> None:
    log = EventLog(revision=0, queue_size=2)
    state = [{"id": "a"}]
    lines = stream(log, since=0, instances=lambda: state)
    first = json.loads(await anext(lines))
    assert first["type"] == "snapshot"
    for i in range(10):  # never blocks although nobody reads
        log.append("put", {"id": str(i)})
    assert log.overflows > 0
    again = json.loads(await anext(lines))
    assert again == {"type": "snapshot", "revision": 10, "instances": state}
    log.append("delete", {"id": "a"})
    nxt = json.loads(await anext(lines))
    assert (nxt["type"], nxt["revision"]) == ("delete", 11)
    log.close_all()
    with pytest.raises(StopAsyncIteration):
        await anext(lines)


async def test_keepalive_line_when_idle() -> None:
    log = EventLog()
    lines = stream(log, since=0, instances=list, keepalive_s=0.01)
    await anext(lines)
    assert await anext(lines) == b"\n"
    await lines.aclose()
    assert log.watchers == 0


async def test_lease_expires_at_its_deadline_and_heartbeat_postpones_it() -> None:
    store = MemoryStore()
    await store.start()
    try:
        a = await store.register(spec("a", 8100, lease_ttl_s=0.3))
        b = await store.register(spec("b", 8200, lease_ttl_s=0.3))
        rev = store.revision
        w = store.events.subscribe()
        t0 = time.monotonic()
        # keep a alive with heartbeats (which are not events), let b lapse
        while time.monotonic() - t0 < 0.6:
            assert await store.heartbeat(a["id"], None) is not None
            await asyncio.sleep(0.05)
        item = w.queue.get_nowait()
        assert item is not None
        doc = json.loads(item[1])
        assert (doc["type"], doc["revision"], doc["instance"]["id"]) == ("delete", rev + 1, b["id"])
        assert w.queue.empty()
        assert await store.get(a["id"]) is not None and await store.get(b["id"]) is None
        assert len(store._heap) <= 3  # renewals add no heap entries
    finally:
        await store.close()


async def test_reregister_same_content_is_not_a_change() -> None:
    store = MemoryStore()
    first = await store.register(spec(id="x1"))
    again = await store.register(spec(id="x1"))
    assert again["revision"] == first["revision"]
    assert again["instance"]["registered_at"] == first["instance"]["registered_at"]
    changed = await store.register(spec(id="x1", state="healthy"))
    assert changed["revision"] == first["revision"] + 1
    # no id: derived from kind+url, so a client that lost its id lands on the same instance
    assert (await store.register(spec("svc", 9000)))["id"] == (await store.register(spec("svc", 9000)))["id"]


async def test_heartbeat_with_body_updates_and_patch_merges_metadata() -> None:
    store = MemoryStore()
    reg = await store.register(spec(metadata={"a": 1, "b": 2}))
    rev = store.revision
    await store.heartbeat(reg["id"], HeartbeatIn(state="healthy"))
    assert store.revision == rev + 1
    done = await store.update(reg["id"], HeartbeatIn(metadata={"b": None, "c": 3}))
    assert done is not None and done["instance"]["metadata"] == {"a": 1, "c": 3}


async def test_snapshot_round_trip_drops_expired_and_keeps_revision(tmp_path: Path) -> None:
    store = MemoryStore(state_dir=tmp_path)
    await store.start()
    await store.register(spec("long", 8100, lease_ttl_s=60))
    await store.register(spec("short", 8200, lease_ttl_s=0.05))
    rev = store.revision
    await store.close()
    doc = snapshot.load(tmp_path / snapshot.FILE_NAME)
    assert doc is not None and len(doc["instances"]) == 2
    await asyncio.sleep(0.1)  # let the short lease run out while "down"
    again = MemoryStore(state_dir=tmp_path)
    listed, rev2 = await again.list()
    assert [i["service"] for i in listed] == ["long"]
    assert rev2 >= rev


def test_damaged_snapshot_is_ignored(tmp_path: Path) -> None:
    (tmp_path / snapshot.FILE_NAME).write_text("{not json")
    assert MemoryStore(state_dir=tmp_path)._instances == {}


@pytest.mark.parametrize(
    ("url", "problem"),
    [("ftp://h:1", "http"), ("http://h", "port"), ("http://:80", "host"), ("http://h:99999", "invalid")],
)
def test_bad_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_url(url)
