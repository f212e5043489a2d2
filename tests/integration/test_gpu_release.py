"""wait_for_release against real processes, with the inventory file playing the driver."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from corral.gpu import ENV_VAR, Inventory, read_inventory, wait_for_release
from support import kill_tree, two_level_tree

GIB = 1 << 30


@pytest.fixture
def tree() -> Iterator[tuple[int, int]]:
    """(child PID, grandchild PID) in a new session; the child leads the process group."""
    with two_level_tree() as pids:
        yield pids


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process outside the tree, in a session of its own: someone else's GPU job."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        yield p
    finally:
        kill_tree(p.pid)


def write(f: Path, holders: list[tuple[int, int]], index: int = 0) -> None:
    doc = {
        "gpus": [
            {
                "index": index,
                "name": "NVIDIA H100",
                "memory_total": 80 * GIB,
                "processes": [{"pid": p, "used_memory": b} for p, b in holders],
            }
        ]
    }
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, f)


@pytest.fixture
def inv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    f = tmp_path / "gpus.json"
    monkeypatch.setenv(ENV_VAR, str(f))
    return f


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_returns_once_the_file_shows_the_memory_released(inv_file: Path, tree: tuple[int, int]) -> None:
    child, grandchild = tree
    write(inv_file, [(grandchild, 38 * GIB)])
    polled = asyncio.Event()

    def inventory() -> Inventory:
        inv = read_inventory()  # the real file path, read again on each poll
        polled.set()
        return inv

    waiter = asyncio.create_task(wait_for_release(child, [0], timeout_s=60, poll_s=0.05, inventory=inventory))
    await asyncio.wait_for(polled.wait(), 30)
    polled.clear()
    await asyncio.wait_for(polled.wait(), 30)  # it polled, saw the memory held, and kept waiting
    assert not waiter.done()
    write(inv_file, [])  # the driver freed it
    result = await asyncio.wait_for(waiter, 30)
    assert result.ok and result.reason is None and result.killed == []
    assert 0 < result.waited_s < 60


async def test_timeout_names_the_gpu_the_memory_and_the_process(
    inv_file: Path, tree: tuple[int, int]
) -> None:
    child, grandchild = tree
    write(inv_file, [(grandchild, int(38.2 * GIB))])
    result = await wait_for_release(child, [0], timeout_s=0.3, poll_s=0.05)
    assert not result.ok and result.waited_s >= 0.3
    command = f"{sys.executable} -c import time; time.sleep(120)"
    assert result.reason == f"GPU 0: 38.2 GiB still held by PID {grandchild} ({command})"
    assert psutil.pid_exists(grandchild)  # no kill_own: nothing is killed


async def test_orphan_in_the_old_process_group_is_killed(inv_file: Path, tree: tuple[int, int]) -> None:
    """The parent died and the worker was reparented, as with vLLM's EngineCore: pgid still finds it."""
    child, grandchild = tree
    pids = [child, grandchild]  # recorded before the stop, as the sitter does
    os.kill(child, signal.SIGKILL)
    await asyncio.to_thread(os.waitpid, child, 0)
    write(inv_file, [(grandchild, 30 * GIB)])

    async def driver() -> None:  # frees the memory once the holder is dead
        while not _gone(grandchild):
            await asyncio.sleep(0.02)
        write(inv_file, [])

    freed = asyncio.create_task(driver())
    result = await wait_for_release(pids, [0], timeout_s=30, kill_own=child, poll_s=0.05)
    await asyncio.wait_for(freed, 30)
    assert result.ok and result.killed == [grandchild]


async def test_foreign_processes_are_neither_waited_for_nor_killed(
    inv_file: Path, tree: tuple[int, int], sleeper: subprocess.Popen[bytes]
) -> None:
    write(inv_file, [(sleeper.pid, 20 * GIB)])
    result = await wait_for_release(tree[0], [0], timeout_s=10, kill_own=tree[0], poll_s=0.05)
    assert result.ok and result.killed == []
    assert sleeper.poll() is None


async def test_a_listed_pid_outside_the_group_is_not_killed(
    inv_file: Path, tree: tuple[int, int], sleeper: subprocess.Popen[bytes]
) -> None:
    write(inv_file, [(sleeper.pid, 20 * GIB)])
    result = await wait_for_release([sleeper.pid], [0], timeout_s=0.3, kill_own=tree[0], poll_s=0.05)
    assert not result.ok and result.killed == [] and sleeper.poll() is None
    assert result.reason is not None
    assert result.reason.startswith(f"GPU 0: 20.0 GiB still held by PID {sleeper.pid} (")


async def test_callable_kill_own_gets_each_survivor(inv_file: Path, tree: tuple[int, int]) -> None:
    child, grandchild = tree
    write(inv_file, [(grandchild, GIB)])
    asked: list[int] = []

    def kill(pid: int) -> None:
        asked.append(pid)
        write(inv_file, [])

    result = await wait_for_release(child, [0], timeout_s=30, kill_own=kill, poll_s=0.05)
    assert result.ok and asked == [grandchild] and result.killed == [grandchild]


async def test_other_gpus_and_no_inventory(inv_file: Path, tree: tuple[int, int], tmp_path: Path) -> None:
    child, grandchild = tree
    write(inv_file, [(grandchild, GIB)], index=1)
    result = await wait_for_release(child, [0], timeout_s=10, poll_s=0.05)
    assert result.ok  # held on GPU 1 only
    missing = await wait_for_release(
        child, None, timeout_s=10, inventory=lambda: read_inventory(tmp_path / "x")
    )
    assert missing.ok and missing.reason is not None and missing.reason.startswith("nothing to check: ")
