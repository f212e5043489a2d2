"""Registry CPU under load: N instances heartbeating once a second against one registry.

    .venv/bin/python bench/registry_load.py [--instances 1000] [--window 15]

Starts `corral registry` on a free port, runs the load generator in a second process (so its CPU
is not counted), waits until every instance is registered and a warm-up has passed, then reads the
registry's utime+stime from /proc/PID/stat over the window and prints the share of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def generate(url: str, n: int, duration: float) -> None:
    """The load: register n instances, then heartbeat each once a second (staggered)."""
    conn = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=10)
    ok = errors = 0
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        sem = asyncio.Semaphore(64)

        async def register(i: int) -> str:
            body = {
                "service": f"load-{i % 50}",
                "url": f"http://127.0.0.1:{20000 + i}",
                "models": [f"model-{i % 20}"],
                "state": "healthy",
                "metadata": {"max_concurrency": 8},
                "lease_ttl_s": 5,
            }
            async with sem, s.post(f"{url}/v1/instances", json=body) as r:
                r.raise_for_status()
                return str((await r.json())["id"])

        ids = await asyncio.gather(*(register(i) for i in range(n)))
        print("registered", flush=True)
        start = time.monotonic()

        async def beat(k: int, iid: str) -> None:
            nonlocal ok, errors
            t = start + k / n
            while t < start + duration:
                await asyncio.sleep(max(0.0, t - time.monotonic()))
                try:
                    async with s.put(f"{url}/v1/instances/{iid}/heartbeat") as r:
                        await r.read()
                        ok += r.status == 200
                        errors += r.status != 200
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                t += 1.0

        await asyncio.gather(*(beat(k, iid) for k, iid in enumerate(ids)))
    print(json.dumps({"heartbeats": ok, "errors": errors, "seconds": duration}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--window", type=float, default=15.0, help="seconds of CPU measurement")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--generate", metavar="URL", help=argparse.SUPPRESS)
    ap.add_argument("--duration", type=float, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate:
        asyncio.run(generate(args.generate, args.instances, args.duration))
        return

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    reg = subprocess.Popen(
        [sys.executable, "-m", "corral", "registry", "--port", str(port), "--log-level", "warning"],
        start_new_session=True,
    )
    gen: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("registry did not start") from None
                time.sleep(0.1)
        duration = args.warmup + args.window + 2
        gen = subprocess.Popen(
            [sys.executable, __file__, "--generate", url, "--instances", str(args.instances),
             "--duration", str(duration)],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )  # fmt: skip
        assert gen.stdout is not None
        if gen.stdout.readline().strip() != "registered":
            raise SystemExit("load generator failed to register")
        time.sleep(args.warmup)
        c0, t0 = cpu_seconds(reg.pid), time.monotonic()
        time.sleep(args.window)
        c1, t1 = cpu_seconds(reg.pid), time.monotonic()
        result = json.loads(gen.stdout.readline())
        gen.wait(timeout=30)
        health = json.loads(urllib.request.urlopen(url + "/health", timeout=5).read())
        pct = 100 * (c1 - c0) / (t1 - t0)
        rate = result["heartbeats"] / result["seconds"]
        print(
            f"registry CPU: {pct:.1f}% of one core over {t1 - t0:.1f}s with {args.instances} instances "
            f"({rate:.0f} heartbeats/s, {result['errors']} errors, {health['instances']} registered); "
            f"{1e6 * (c1 - c0) / max(1, rate * (t1 - t0)):.0f} us CPU per heartbeat"
        )
    finally:
        for p in (gen, reg):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


if __name__ == "__main__":
    main()
