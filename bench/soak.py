"""Chaos soak: a real fleet under load while its processes are killed, stopped and resumed.

    .venv/bin/python bench/soak.py [--duration 600] [--clients 32] [--seed 1]   (make soak)

`corral up -d` starts a registry, the router and 3 mock models x 2 replicas (each replica under
its own sitter). 32 clients send requests for random models, half of them streaming, a quarter of
the streams leaving after a few events. Meanwhile a driver picks a random victim every 1-3 s
among the backends, the sitters and the registry, and SIGKILLs it, or SIGSTOPs it and SIGCONTs
it 0.5-3 s later. The driver never takes down both replicas of one model at once (a killed
backend counts as down for 8 s, the time its sitter needs to restart it): a request then always
has a live replica.

Counted (goals in brackets): requests failed before their first byte [0], streams that ended
without ``[DONE]`` or an SSE error event [0], requests whose answer had an SSE error event
(allowed: a backend died mid-stream), router RSS and open fds after warm-up and at the end [no
growth beyond noise], processes of the fleet left after ``corral down`` [0]. Exits 1 when a goal
is missed. Prints a Markdown table (docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import psutil

MODELS = ("soak-a", "soak-b", "soak-c")
KILL_DOWN_S = 8.0  # a SIGKILLed backend is not counted on for this long


def free_port() -> int:
    import socket

    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = int(s.getsockname()[1])
        if p < 60000:
            return p
    raise RuntimeError("no free port")


def write_config(tmp: Path) -> tuple[Path, int]:
    router, registry, dash = free_port(), free_port(), free_port()
    base = 20000 + random.randrange(0, 20000, 100)
    lines = [
        "[corral]",
        f'state_dir = "{tmp / "state"}"',
        "[registry]",
        f"port = {registry}",
        "[router]",
        f"port = {router}",
        "drain_timeout_s = 5",
        "[dashboard]",
        f"port = {dash}",
    ]
    for i, model in enumerate(MODELS):
        lines += [
            "[[backend]]",
            f'name = "{model}"',
            'preset = "mock"',
            f'models = ["{model}"]',
            f"port = {base + i * 20}",
            "replicas = 2",
            'args = ["--ttft-ms", "20", "--itl-ms", "10"]',
        ]
    cfg = tmp / "corral.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg, router


def corral(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args], capture_output=True, text=True, timeout=timeout
    )


def fleet(launcher_pid: int) -> dict[str, list[psutil.Process]]:
    """The launcher's descendants by role (from their command lines)."""
    roles: dict[str, list[psutil.Process]] = {"router": [], "registry": [], "sit": [], "mock": []}
    try:
        kids = psutil.Process(launcher_pid).children(recursive=True)
    except psutil.Error:
        return roles
    for p in kids:
        try:
            argv = p.cmdline()
        except psutil.Error:
            continue
        if "corral" in argv:
            role = argv[argv.index("corral") + 1] if argv.index("corral") + 1 < len(argv) else ""
            if role in roles:
                roles[role].append(p)
    return roles


def model_of(p: psutil.Process) -> str | None:
    try:
        argv = p.cmdline()
    except psutil.Error:
        return None
    for flag in ("--models", "--name"):
        if flag in argv:
            value = argv[argv.index(flag) + 1]
            for m in MODELS:
                if value.startswith(m):
                    return m
    return None


def replica_key(p: psutil.Process) -> str:
    """Backend port of a mock or a sitter (a replica's identity across restarts)."""
    try:
        argv = p.cmdline()
    except psutil.Error:
        return "?"
    return argv[argv.index("--port") + 1] if "--port" in argv else "?"


class Stats:
    def __init__(self) -> None:
        self.c: Counter[str] = Counter()
        self.examples: list[str] = []

    def bad(self, kind: str, detail: str) -> None:
        self.c[kind] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{kind}: {detail[:200]}")


async def client(url: str, until: float, stats: Stats, rnd: random.Random) -> None:
    timeout = aiohttp.ClientTimeout(total=120, sock_read=60)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        while time.monotonic() < until:
            model = rnd.choice(MODELS)
            stream = rnd.random() < 0.5
            leave_after = rnd.randint(1, 5) if stream and rnd.random() < 0.25 else 0
            body = {
                "model": model,
                "messages": [{"role": "user", "content": "soak"}],
                "max_tokens": rnd.randint(5, 40),
                "stream": stream,
            }
            stats.c["requests"] += 1
            got_byte = False
            try:
                async with s.post(url + "/v1/chat/completions", json=body) as r:
                    if r.status != 200:
                        stats.bad("failed before first byte", f"{r.status} {await r.text()}")
                        continue
                    if not stream:
                        doc = await r.json()
                        got_byte = True
                        if not doc.get("choices"):
                            stats.bad("bad answer", json.dumps(doc))
                        else:
                            stats.c["ok"] += 1
                        continue
                    events, done, error = 0, False, False
                    async for line in r.content:
                        got_byte = True
                        if not line.startswith(b"data: "):
                            continue
                        events += 1
                        if line.startswith(b"data: [DONE]"):
                            done = True
                        elif b'"error"' in line and b'"choices"' not in line:
                            error = True
                        if leave_after and events >= leave_after:
                            break
                    if leave_after and events >= leave_after and not (done or error):
                        stats.c["left early"] += 1
                    elif done:
                        stats.c["ok"] += 1
                    elif error:
                        stats.c["stream ended with an error event"] += 1
                    else:
                        stats.bad("stream without [DONE] or error event", f"{model}: {events} events")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                kind = "stream cut after bytes" if got_byte else "failed before first byte"
                stats.bad(kind, f"{type(exc).__name__}: {exc}")


async def chaos(launcher_pid: int, until: float, rnd: random.Random, log: Counter[str]) -> None:
    down_until: dict[str, float] = {}  # replica key -> when it counts as up again
    stopped: list[tuple[float, psutil.Process]] = []
    while time.monotonic() < until:
        await asyncio.sleep(rnd.uniform(1.0, 3.0))
        now = time.monotonic()
        for t, p in [x for x in stopped if x[0] <= now]:
            stopped.remove((t, p))
            try:
                p.send_signal(signal.SIGCONT)
            except psutil.Error:
                pass
        roles = fleet(launcher_pid)
        candidates = [("registry", p) for p in roles["registry"]]
        for role in ("mock", "sit"):
            for p in roles[role]:
                model, key = model_of(p), replica_key(p)
                others = [
                    q for q in roles["mock"] + roles["sit"] if model_of(q) == model and replica_key(q) != key
                ]
                if model and all(down_until.get(replica_key(q), 0) <= now for q in others):
                    candidates.append((role, p))
        if not candidates:
            continue
        role, victim = rnd.choice(candidates)
        key = replica_key(victim)
        try:
            if rnd.random() < 0.5:
                victim.send_signal(signal.SIGKILL)
                log[f"SIGKILL {role}"] += 1
                if role != "registry":
                    down_until[key] = now + KILL_DOWN_S
            else:
                victim.send_signal(signal.SIGSTOP)
                pause = rnd.uniform(0.5, 3.0)
                stopped.append((now + pause, victim))
                log[f"SIGSTOP+SIGCONT {role}"] += 1
                if role != "registry":
                    down_until[key] = now + pause + 1.0
        except psutil.Error:
            pass
    for _, p in stopped:
        try:
            p.send_signal(signal.SIGCONT)
        except psutil.Error:
            pass


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


async def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of chaos under load")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    random.seed(a.seed)
    rnd = random.Random(a.seed)
    with tempfile.TemporaryDirectory(prefix="corral-soak-") as d:
        tmp = Path(d)
        cfg, port = write_config(tmp)
        router_url = f"http://127.0.0.1:{port}"
        up = corral("up", "-d", "-c", str(cfg), timeout=300)
        if up.returncode != 0:
            print(up.stdout, up.stderr)
            return 1
        info = json.loads((tmp / "state" / "launcher.json").read_text())
        launcher = int(info["pid"])
        seen: dict[int, float] = {}  # every fleet process ever seen: pid -> create time

        def remember() -> None:
            for procs in fleet(launcher).values():
                for p in procs:
                    try:
                        seen[p.pid] = p.create_time()
                    except psutil.Error:
                        pass

        remember()
        router_pid = fleet(launcher)["router"][0].pid
        stats, chaos_log = Stats(), Counter[str]()
        # Warm-up without chaos, then the baseline of the router's memory and descriptors.
        warm = time.monotonic() + 5
        await asyncio.gather(*(client(router_url, warm, Stats(), rnd) for _ in range(a.clients)))
        rss0, fd0 = rss_mb(router_pid), fds(router_pid)
        until = time.monotonic() + a.duration

        async def watch() -> None:
            while time.monotonic() < until:
                remember()
                await asyncio.sleep(1)

        await asyncio.gather(
            chaos(launcher, until, rnd, chaos_log),
            watch(),
            *(client(router_url, until, stats, rnd) for _ in range(a.clients)),
        )
        await asyncio.sleep(2)  # let keep-alive connections of the clients close
        rss1, fd1 = rss_mb(router_pid), fds(router_pid)
        remember()
        down = corral("down", "-c", str(cfg), timeout=120)
        left = []
        for pid, created in seen.items():
            try:
                p = psutil.Process(pid)
                if abs(p.create_time() - created) < 0.05 and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{pid} {' '.join(p.cmdline())[:100]}")
            except psutil.Error:
                pass
        for line in left:  # never leave them behind, even when the goal is missed
            pid = int(line.split()[0])
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    c = stats.c
    rows = [
        ("duration s / clients", f"{a.duration:g} / {a.clients}"),
        ("requests", c["requests"]),
        ("completed (ok)", c["ok"]),
        ("streams left early by the client", c["left early"]),
        ("streams ended with an SSE error event", c["stream ended with an error event"]),
        ("failed before the first byte [0]", c["failed before first byte"]),
        ("streams without [DONE] or error event [0]", c["stream without [DONE] or error event"]),
        ("streams cut after bytes (connection error)", c["stream cut after bytes"]),
        ("chaos actions", ", ".join(f"{k} {v}" for k, v in sorted(chaos_log.items()))),
        ("router RSS MB before / after", f"{rss0:.0f} / {rss1:.0f}"),
        ("router open fds before / after", f"{fd0} / {fd1}"),
        ("processes left after corral down [0]", len(left)),
    ]
    print("| soak | |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    for e in stats.examples:
        print("  e.g.", e)
    if down.returncode != 0:
        print("corral down:", down.stdout, down.stderr)
    bad = (
        c["failed before first byte"]
        or c["stream without [DONE] or error event"]
        or c["stream cut after bytes"]
        or left
        or rss1 > rss0 * 1.5 + 20
        or fd1 > fd0 + 50
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
