"""Chaos soak: a real fleet under load while its processes are killed, stopped and resumed.

    .venv/bin/python bench/soak.py [--duration 600] [--clients 32] [--seed 1]   (make soak)

`corral up -d` starts a registry, the router and 3 mock models x 2 replicas (each replica under
its own sitter). 32 clients send requests for random models, half of them streaming, a quarter of
the streams leaving after a few events. Meanwhile a driver picks a random victim every 1-3 s
among the backends, the sitters and the registry, and SIGKILLs it, or SIGSTOPs it and SIGCONTs
it 0.5-3 s later. The driver never takes down both replicas of one model at once: it touches a
replica only while the router has the other one in rotation (its ``instance_healthy`` gauge) and
the driver has not touched that one for 5 s: a request then has a live replica.

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


def free_port() -> int:
    import socket

    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = int(s.getsockname()[1])
        if p < 60000:
            return p
    raise RuntimeError("no free port")


def write_config(tmp: Path) -> tuple[Path, int, int]:
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
            "restart_delay = 0.5",
        ]
    cfg = tmp / "corral.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg, router, registry


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


def identity(p: psutil.Process) -> tuple[str | None, str]:
    """(model, backend port) of a mock or a sitter: a replica's identity across restarts."""
    try:
        argv = p.cmdline()
    except psutil.Error:
        return None, "?"
    if "--settings" in argv:  # a sitter the launcher started: its settings file says
        try:
            doc = json.loads(Path(argv[argv.index("--settings") + 1]).read_text())
        except (OSError, ValueError):
            return None, "?"
        models = doc.get("models") or [doc.get("name", "")]
        model = next((m for m in MODELS if any(str(x).startswith(m) for x in models)), None)
        return model, str(doc.get("port", "?"))
    port = argv[argv.index("--port") + 1] if "--port" in argv else "?"
    if "--models" in argv:
        value = argv[argv.index("--models") + 1]
        return next((m for m in MODELS if value.startswith(m)), None), port
    return None, port


async def healthy_ports(s: aiohttp.ClientSession, router: str) -> set[str] | None:
    """Backend ports in the router's rotation now (its instance_healthy gauge); None: no answer."""
    try:
        async with s.get(router + "/metrics", timeout=aiohttp.ClientTimeout(total=2)) as r:
            text = await r.text()
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None
    ports = set()
    for line in text.splitlines():
        if line.startswith("corral_router_instance_healthy{") and line.endswith(" 1.0"):
            ports.add(line.split('instance="', 1)[1].split('"', 1)[0].rsplit(":", 1)[1].rstrip("/"))
    return ports


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


async def chaos(
    launcher_pid: int, router: str, until: float, rnd: random.Random, log: Counter[str], victims: set[str]
) -> None:
    touched: dict[str, float] = {}  # backend port -> when the driver last stopped/killed it
    stopped: list[tuple[float, psutil.Process]] = []
    async with aiohttp.ClientSession() as session:
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
            healthy = await healthy_ports(session, router)
            candidates: list[tuple[str, psutil.Process, str]] = []
            if "registry" in victims:
                candidates += [("registry", p, "") for p in roles["registry"]]
            if healthy is not None:  # without the router's view, leave the replicas alone
                for role in ("mock", "sit"):
                    if {"mock": "backends", "sit": "sitters"}[role] not in victims:
                        continue
                    for p in roles[role]:
                        model, port = identity(p)
                        if model is None:
                            continue
                        others = {
                            identity(q)[1] for q in roles["mock"] + roles["sit"] if identity(q)[0] == model
                        } - {port}
                        # Every other replica in the router's rotation and untouched for 5 s.
                        if others and all(o in healthy and touched.get(o, 0) < now - 5 for o in others):
                            candidates.append((role, p, port))
            if not candidates:
                continue
            role, victim, port = rnd.choice(candidates)
            try:
                if rnd.random() < 0.5:
                    victim.send_signal(signal.SIGKILL)
                    log[f"SIGKILL {role}"] += 1
                else:
                    victim.send_signal(signal.SIGSTOP)
                    stopped.append((now + rnd.uniform(0.5, 3.0), victim))
                    log[f"SIGSTOP+SIGCONT {role}"] += 1
                if port:
                    touched[port] = now
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
    ap.add_argument("--victims", default="backends,sitters,registry", help="what the driver may hit")
    a = ap.parse_args()
    random.seed(a.seed)
    rnd = random.Random(a.seed)
    with tempfile.TemporaryDirectory(prefix="corral-soak-") as d:
        tmp = Path(d)
        cfg, port, _registry_port = write_config(tmp)
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

        try:
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
                chaos(
                    launcher,
                    router_url,
                    until,
                    rnd,
                    chaos_log,
                    set(a.victims.split(",")),
                ),
                watch(),
                *(client(router_url, until, stats, rnd) for _ in range(a.clients)),
            )
            await asyncio.sleep(2)  # let keep-alive connections of the clients close
            rss1, fd1 = rss_mb(router_pid), fds(router_pid)
            remember()
        finally:  # whatever happened, the fleet goes down
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
