"""Requests lost while the fleet changes: plain restart vs rolling restart vs reload, one run.

    .venv/bin/python bench/fleet_changes.py [--clients 32] [--replicas 3] [--tokens 32]

A real `corral up` (registry, router, backend ``chat`` with N mock replicas at 50 ms TTFT and
20 ms per token, and a one-replica backend ``other``), and ``--clients`` openai-SDK clients
(half streaming) through the router during each change:
1. ``corral restart chat``            (every replica at once: the baseline a naive tool gives);
2. ``corral restart --rolling chat``  (drain -> restart -> healthy and routed, one at a time);
3. ``corral reload`` after changing ``other``'s args (load on both models; a surge copy covers
   ``other``'s single replica), with the PIDs of every other process checked.
Reports failed requests, truncated streams (no ``finish_reason``), requests served, and the
time per replica (drain / total) of the rolling restart.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from fleet_load import Load, LoadResult


def free_block(n: int) -> int:
    """A port p with p .. p + n - 1 free, below the ephemeral range (client sockets' ports)."""
    low, _ = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    while True:
        p = random.randrange(10000, low - n)
        socks = [socket.socket() for _ in range(n)]
        try:
            for i, s in enumerate(socks):
                s.bind(("127.0.0.1", p + i))
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()


def corral(cfg: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args, "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def config(ports: dict[str, int], replicas: int, other_ttft: int) -> str:
    mock = '"--ttft-ms", "50", "--itl-ms", "20"'
    return f"""
[corral]
state_dir = "state"
[dashboard]
port = {ports["dash"]}
[registry]
port = {ports["registry"]}
[router]
port = {ports["router"]}

[[backend]]
name = "chat"
preset = "mock"
models = ["mock-chat"]
port = {ports["chat"]}
port_step = 2
replicas = {replicas}
args = [{mock}]

[[backend]]
name = "other"
preset = "mock"
models = ["other-model"]
port = {ports["other"]}
args = ["--ttft-ms", "{other_ttft}", "--itl-ms", "20"]
"""


def pids(dash: int) -> dict[str, int]:
    doc = httpx.get(f"http://127.0.0.1:{dash}/api/services", timeout=30).json()
    return {s["name"]: s["pid"] for s in doc["services"] if s["pid"]}


def wait_routed(dash: int, n: int, timeout: float = 120) -> None:
    """Until the router has ``n`` healthy instances (every replica back before the next phase)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = httpx.get(f"http://127.0.0.1:{dash}/api/router", timeout=30).json()
        rows = [i for m in doc.get("models", []) for i in m.get("instances", [])]
        if sum(1 for i in rows if i.get("healthy")) >= n:
            return
        time.sleep(0.2)
    raise SystemExit(f"the router has not got {n} healthy instances after {timeout:.0f}s")


def under_load(loads: list[Load], action: object) -> tuple[LoadResult, object, float]:
    for load in loads:
        load.start()
    time.sleep(2.0)  # steady state first
    began = time.monotonic()
    print(f"[{began:.2f}] change begins", flush=True)
    out = action()  # type: ignore[operator]
    took = time.monotonic() - began
    print(f"[{time.monotonic():.2f}] change done", flush=True)
    time.sleep(1.0)
    total = LoadResult()
    for load in loads:
        r = load.stop()
        total.ok += r.ok
        total.failed += r.failed
        total.truncated += r.truncated
        total.errors += r.errors
    return total, out, took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=32)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    ports = {
        "dash": free_block(1),
        "registry": free_block(1),
        "router": free_block(1),
        "chat": free_block(2 * a.replicas),
        "other": free_block(2),
    }
    cfg = tmp / "corral.toml"
    cfg.write_text(config(ports, a.replicas, 50))
    base = f"http://127.0.0.1:{ports['router']}/v1"
    up = corral(cfg, "up", "-d", "--timeout", "180")
    if up.returncode != 0:
        sys.exit(up.stdout + up.stderr)
    rows = []
    dash = ports["dash"]
    try:
        # 1. rolling restart
        def rolling() -> object:
            r = httpx.post(f"http://127.0.0.1:{dash}/api/rolling/chat", timeout=600)
            r.raise_for_status()
            return r.json()["replicas"]

        wait_routed(dash, a.replicas + 1)
        res, steps, took = under_load([Load(base, "mock-chat", a.clients, a.tokens)], rolling)
        per = ", ".join(f"{s['name']} {s['total_s']:.1f}s (drain {s['drain_s']:.2f}s)" for s in steps)  # type: ignore[attr-defined]
        rows.append(("restart --rolling chat", res, took, per))
        # 2. reload changing other's args
        wait_routed(dash, a.replicas + 1)
        before = pids(dash)
        cfg.write_text(config(ports, a.replicas, 60))
        half = a.clients // 2
        res, _, took = under_load(
            [Load(base, "other-model", half, a.tokens), Load(base, "mock-chat", a.clients - half, a.tokens)],
            lambda: corral(cfg, "reload"),
        )
        after = pids(dash)
        kept = [n for n in before if n != "other-0" and after.get(n) == before[n]]
        others = [n for n in before if n != "other-0"]
        note = f"other-0 pid {'changed' if after.get('other-0') != before.get('other-0') else 'SAME'}; "
        note += f"{len(kept)}/{len(others)} other PIDs unchanged"
        rows.append(("reload (other's args changed)", res, took, note))
        # 3. plain restart of every replica at once (the baseline)
        wait_routed(dash, a.replicas + 1)
        res, _, took = under_load(
            [Load(base, "mock-chat", a.clients, a.tokens)], lambda: corral(cfg, "restart", "chat")
        )
        rows.append(("restart chat (all at once)", res, took, ""))
    finally:
        corral(cfg, "down", timeout=120)
    print(
        f"\nclients {a.clients} (half streaming, {a.tokens} tokens), chat replicas {a.replicas}, load avg "
        f"{os.getloadavg()[0]:.1f}"
    )
    print("| change | served | failed | truncated streams | took | detail |")
    print("|---|---:|---:|---:|---:|---|")
    for name, r, took, detail in rows:
        print(f"| {name} | {r.ok} | {r.failed} | {r.truncated} | {took:.1f} s | {detail} |")
    for name, r, _, _ in rows:
        if r.errors:
            print(f"\nerrors during {name}:", json.dumps(r.errors[:6], indent=1))


if __name__ == "__main__":
    main()
