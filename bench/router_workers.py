"""`corral router --workers N`: req/s and router CPU per request for N = 1 and 2, side by side.

    .venv/bin/python bench/router_workers.py [--duration 5] [--concurrency 64] [--repeat 2]
        [--workers 1,2]

The method of bench/router_overhead.py (its load generator and CPU accounting: scheduler run
time of the router's whole process tree from /proc), with one router per N on its own port, all
over the same `corral mock` (`--workers 2`), non-streamed requests, and the same load against the
mock directly as the reference. Cells run interleaved (direct, N=1, N=2, direct, ...) so that
the machine's noise hits every column alike; the summary is the median of ``--repeat`` rounds.
Nothing is pinned: on a 2-core machine the load generator, the mock and the router share the
cores, so req/s shows how much a second worker buys when cores are scarce, and CPU/request
shows what a worker costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from router_overhead import free_port, load, spawn, wait_ready


async def all_workers_ready(url: str, in_a_row: int = 30) -> None:
    """Until ``in_a_row`` answers over new connections all show the backend in rotation."""
    ok = 0
    for _ in range(3000):
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            ok = ok + 1 if r.status == 200 and (await r.json())["healthy"] >= 1 else 0
        if ok >= in_a_row:
            return
        await asyncio.sleep(0.02)
    raise RuntimeError(f"{url}: not every worker became ready")


async def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workers", default="1,2")
    a = ap.parse_args()
    counts = [int(n) for n in a.workers.split(",")]
    mock_port = free_port()
    mock = spawn(["mock", "--port", str(mock_port), "--models", "m1", "--workers", "2"], None)
    backend = f"http://127.0.0.1:{mock_port}"
    routers = {}
    for n in counts:
        port = free_port()
        routers[n] = (
            port,
            spawn(["router", "--port", str(port), "--worker-url", backend, "--workers", str(n)], None),
        )
    try:
        await wait_ready(backend + "/v1/models")
        for port, _ in routers.values():
            await wait_ready(f"http://127.0.0.1:{port}/health", want_healthy=1)
        for port, _ in routers.values():  # every worker (fresh connections reach any) is ready
            await all_workers_ready(f"http://127.0.0.1:{port}/health")
        cells: dict[str, list[tuple[float, float, float]]] = {"direct": [], **{f"N={n}": [] for n in counts}}
        for _ in range(a.repeat):
            for name in cells:
                if name == "direct":
                    url, pid = f"{backend}/v1/chat/completions", None
                else:
                    port, proc = routers[int(name[2:])]
                    url, pid = f"http://127.0.0.1:{port}/v1/chat/completions", proc.pid
                r = await load(url, a.concurrency, a.duration, "plain", 16, pid)
                cells[name].append((r.rps, r.cpu_us_req, r.p(r.lat, 0.5)))
        print(
            f"{os.cpu_count()} CPUs, nothing pinned; {a.concurrency} connections, non-streamed, "
            f"{a.duration:g} s per cell, median of {a.repeat} interleaved rounds\n"
        )
        print("| path | req/s | router CPU µs/request | p50 ms | req/s vs N=1 |")
        print("|---|---:|---:|---:|---:|")
        base = statistics.median(x[0] for x in cells[f"N={counts[0]}"])
        for name, xs in cells.items():
            rps = statistics.median(x[0] for x in xs)
            cpu = statistics.median(x[1] for x in xs)
            p50 = statistics.median(x[2] for x in xs)
            cpu_s = "" if name == "direct" else f"{cpu:.0f}"
            print(f"| {name} | {rps:.0f} | {cpu_s} | {p50:.2f} | {rps / base:.2f} |")
    finally:
        for p in (mock, *(proc for _, proc in routers.values())):
            os.killpg(p.pid, 15)
            p.wait(15)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
