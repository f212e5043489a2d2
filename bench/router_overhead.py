"""Router overhead: the same load straight to a `corral mock` and through `corral router`, one run.

    .venv/bin/python bench/router_overhead.py [--duration 3] [--concurrency 1,16,64] [--tokens 16]

Non-streaming and streaming, at each concurrency: req/s, p50/p99 latency, TTFT (streams), chunks/s,
and the router's CPU (utime+stime of its process tree from /proc, before/after) per request and
per streamed chunk, with router/direct ratios. The router is pinned to CPU 0 and the mock and the
load generator to the other CPUs when there are at least two.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import aiohttp

TICK = os.sysconf("SC_CLK_TCK")
BODY = b'{"model": "%s", "messages": [{"role": "user", "content": "hello"}], "max_tokens": %d%s}'
# Streams come from a mock with 1 ms between tokens so that each event is its own chunk.
STREAM_ITL_MS = "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_cpu_s(pid: int) -> float:
    """utime+stime (seconds) of ``pid`` and its descendants."""
    total = 0.0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
            with open(f"/proc/{p}/task/{p}/children") as f:
                pids += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            continue
    return total


def spawn(args: list[str], cpus: str | None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "corral", *args]
    if cpus:
        argv = ["taskset", "-c", cpus, *argv]
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


async def wait_ready(url: str, want_healthy: bool = False) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(600):
            try:
                async with s.get(url) as r:
                    if r.status == 200:
                        if not want_healthy or (await r.json())["healthy"] >= 1:
                            return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} never became ready")


@dataclass
class Result:
    reqs: int
    secs: float
    lat: list[float]
    ttft: list[float]
    chunks: int
    cpu_s: float

    def p(self, xs: list[float], q: float) -> float:
        if not xs:
            return float("nan")
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


async def load(
    url: str, conc: int, duration: float, stream: bool, tokens: int, cpu_pid: int | None
) -> Result:
    model = b"m2" if stream else b"m1"
    body = BODY % (model, tokens, b', "stream": true' if stream else b"")
    headers = {"Content-Type": "application/json"}
    lat: list[float] = []
    ttft: list[float] = []
    chunks = 0
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def one() -> None:
            nonlocal chunks
            t0 = time.perf_counter()
            async with s.post(url, data=body, headers=headers) as r:
                if stream:
                    first = True
                    async for _ in r.content.iter_any():
                        if first:
                            ttft.append(time.perf_counter() - t0)
                            first = False
                        chunks += 1
                else:
                    await r.read()
                assert r.status == 200, r.status
            lat.append(time.perf_counter() - t0)

        async def worker(until: float) -> None:
            while time.perf_counter() < until:
                await one()

        await asyncio.gather(*(worker(time.perf_counter() + 0.3) for _ in range(conc)))  # warm up
        lat.clear(), ttft.clear()
        chunks = 0
        cpu0 = tree_cpu_s(cpu_pid) if cpu_pid else 0.0
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(t0 + duration) for _ in range(conc)))
        secs = time.perf_counter() - t0
        cpu = (tree_cpu_s(cpu_pid) - cpu0) if cpu_pid else 0.0
    return Result(len(lat), secs, lat, ttft, chunks, cpu)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--tokens", type=int, default=16)
    a = ap.parse_args()
    ncpu = os.cpu_count() or 1
    router_cpus, other_cpus = ("0", f"1-{ncpu - 1}") if ncpu >= 2 else (None, None)
    if other_cpus:
        os.sched_setaffinity(0, set(range(1, ncpu)))
    mport, sport, rport = free_port(), free_port(), free_port()
    mock = spawn(["mock", "--port", str(mport), "--models", "m1"], other_cpus)
    smock = spawn(["mock", "--port", str(sport), "--models", "m2", "--itl-ms", STREAM_ITL_MS], other_cpus)
    workers = ["--worker-url", f"http://127.0.0.1:{mport}", "--worker-url", f"http://127.0.0.1:{sport}"]
    router = spawn(["router", "--port", str(rport), *workers], router_cpus)
    try:
        await wait_ready(f"http://127.0.0.1:{mport}/v1/models")
        await wait_ready(f"http://127.0.0.1:{sport}/v1/models")
        await wait_ready(f"http://127.0.0.1:{rport}/health", want_healthy=True)
        await asyncio.sleep(0.3)  # both workers probed
        print(
            f"router pinned to CPU {router_cpus or '-'}, mock + load on {other_cpus or '-'}; "
            f"{a.duration:g} s per cell, {a.tokens} tokens per request\n"
        )
        print(
            "| mode | conc | path | req/s | p50 ms | p99 ms | TTFT p50 ms | chunks/s | "
            "router CPU µs/req | µs/chunk |"
        )
        print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for stream in (False, True):
            for conc in (int(c) for c in a.concurrency.split(",")):
                rows = {}
                direct = sport if stream else mport
                for name, port, pid in (("direct", direct, None), ("router", rport, router.pid)):
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    rows[name] = await load(url, conc, a.duration, stream, a.tokens, pid)
                d, r = rows["direct"], rows["router"]
                mode = "stream" if stream else "plain"
                for name, x in rows.items():
                    cpu_req = f"{x.cpu_s / x.reqs * 1e6:.0f}" if name == "router" and x.reqs else ""
                    cpu_chunk = f"{x.cpu_s / x.chunks * 1e6:.1f}" if name == "router" and x.chunks else ""
                    ttft = f"{x.p(x.ttft, 0.5):.2f}" if stream else ""
                    cps = f"{x.chunks / x.secs:.0f}" if stream else ""
                    print(
                        f"| {mode} | {conc} | {name} | {x.reqs / x.secs:.0f} | {x.p(x.lat, 0.5):.2f} | "
                        f"{x.p(x.lat, 0.99):.2f} | {ttft} | {cps} | {cpu_req} | {cpu_chunk} |"
                    )
                added = r.p(r.lat, 0.5) - d.p(d.lat, 0.5)
                print(
                    f"| {mode} | {conc} | router/direct | {r.reqs / r.secs / (d.reqs / d.secs):.2f}x | "
                    f"+{added:.2f} | | | | | |"
                )
    finally:
        for p in (router, mock, smock):
            os.killpg(p.pid, 15)
            p.wait(10)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
