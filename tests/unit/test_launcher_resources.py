"""The launcher's shared resource sampler: one process-table pass serves every PID for ttl_s."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from corral.launcher.resources import Memo, ResourceSampler
from support import kill_tree, wait_until

# A parent that starts two sleeping children, then sleeps itself.
TREE = (
    "import subprocess, sys, time\n"
    "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']) for _ in range(2)]\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.fixture
def tree() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        yield p
    finally:
        kill_tree(p.pid)
        p.wait()


def test_one_pass_serves_every_pid_until_the_ttl(tree: subprocess.Popen[bytes]) -> None:
    s = ResourceSampler(ttl_s=60)
    solo = subprocess.Popen(["sleep", "60"])
    try:
        out = s.sample([tree.pid, solo.pid])
        assert s.passes == 1
        assert out[tree.pid].children == 2 and out[solo.pid].children == 0
        assert out[tree.pid].rss_bytes and out[tree.pid].rss_bytes > 1_000_000
        assert out[tree.pid].cpu_percent is not None
        assert not out[tree.pid].adopted  # our child: spawned here, not adopted
        assert s.cached([tree.pid]) is out and s.sample([solo.pid]) is out and s.passes == 1
        # A PID the last pass did not cover (a service just started) forces a new pass.
        assert s.cached([tree.pid, 1]) is None
        s.sample([tree.pid, 1])
        assert s.passes == 2
    finally:
        solo.kill()
        solo.wait()


def test_expired_and_gone_pids(tree: subprocess.Popen[bytes]) -> None:
    s = ResourceSampler(ttl_s=0)
    gone = subprocess.Popen(["true"])
    gone.wait()
    out = s.sample([tree.pid, gone.pid])
    assert out[gone.pid].rss_bytes is None and out[gone.pid].children is None
    assert s.cached([tree.pid]) is None  # ttl 0: every call samples again
    wait_until(lambda: s.sample([tree.pid])[tree.pid].cpu_percent is not None, 5, what="a cpu figure")
    assert s.passes >= 2


def test_memo_recomputes_on_a_new_key_or_after_the_ttl() -> None:
    calls: list[int] = []
    m = Memo(lambda: calls.append(1) or len(calls), ttl_s=60)
    assert m.get("a") == 1 and m.get("a") == 1
    assert m.get("b") == 2  # the inventory changed: computed again at once
    m.ttl_s = 0
    assert m.get("b") == 3
