"""Router overhead: the same load straight to a `corral mock` and through `corral router`, one run.

    .venv/bin/python bench/router_overhead.py [--duration 3] [--concurrency 1,16,64]
        [--tokens 16] [--long-tokens 256] [--repeat 1]

Three modes at each concurrency: ``plain`` (non-streaming), ``stream`` (``--tokens`` events) and
``long`` (``--long-tokens`` events); streams use ``ignore_eos`` so every stream has exactly that
many tokens, from a mock with 1 ms between tokens so that each event is its own upstream chunk.
Per cell: req/s, p50/p99 latency, TTFT (streams), SSE events/s, and the router's CPU
(scheduler run time of its process tree from /proc, before/after) per request.

The per-chunk relay cost is the slope between the two stream lengths at the same concurrency:
(CPU per long stream - CPU per short stream) / (events per long stream - events per short
stream), so each stream's fixed per-request cost cancels out. The router is pinned to CPU 0, the
mocks and the load generator to the other CPUs. With ``--repeat N`` the summary reports the
median of N runs of every figure (the machine is shared: expect noise between runs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import aiohttp

TICK = os.sysconf("SC_CLK_TCK")
BODY = b'{"model": "%s", "messages": [{"role": "user", "content": "hello"}], "max_tokens": %d%s}'
STREAM_ITL_MS = "1"
MODES = ("plain", "stream", "long")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants, all threads.

    From ``/proc/PID/task/TID/schedstat`` (the scheduler's run time, in ns) where the kernel has
    it; utime+stime from ``/proc/PID/stat`` otherwise. The latter is sampled at the clock tick
    (10 ms), which misattributes short, frequent wake-ups such as one SSE chunk per millisecond.
    """
    total = 0.0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
            try:
                for tid in tids:
                    with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                        total += int(f.read().split()[0]) / 1e9
            except (FileNotFoundError, ValueError, IndexError):
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / TICK
            with open(f"/proc/{p}/task/{p}/children") as f:
                pids += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            continue
    return total


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def spawn(args: list[str], cpus: str | None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "corral", *args]
    if cpus:
        argv = ["taskset", "-c", cpus, *argv]
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


async def wait_ready(url: str, want_healthy: int = 0) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(600):
            try:
                async with s.get(url) as r:
                    if r.status == 200 and (not want_healthy or (await r.json())["healthy"] >= want_healthy):
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
    events: int
    cpu_s: float

    def p(self, xs: list[float], q: float) -> float:
        if not xs:
            return float("nan")
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000

    @property
    def rps(self) -> float:
        return self.reqs / self.secs

    @property
    def cpu_us_req(self) -> float:
        return self.cpu_s / self.reqs * 1e6 if self.reqs else float("nan")

    @property
    def events_req(self) -> float:
        return self.events / self.reqs if self.reqs else float("nan")


async def load(url: str, conc: int, duration: float, mode: str, tokens: int, cpu_pid: int | None) -> Result:
    stream = mode != "plain"
    model = b"m2" if stream else b"m1"
    body = BODY % (model, tokens, b', "stream": true, "ignore_eos": true' if stream else b"")
    headers = {"Content-Type": "application/json"}
    lat: list[float] = []
    ttft: list[float] = []
    events = 0
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def one() -> None:
            nonlocal events
            t0 = time.perf_counter()
            async with s.post(url, data=body, headers=headers) as r:
                if stream:
                    first = True
                    async for data in r.content.iter_any():
                        if first:
                            ttft.append(time.perf_counter() - t0)
                            first = False
                        events += data.count(b"data:")
                else:
                    await r.read()
                assert r.status == 200, r.status
            lat.append(time.perf_counter() - t0)

        async def worker(until: float) -> None:
            while time.perf_counter() < until:
                await one()

        await asyncio.gather(*(worker(time.perf_counter() + 0.3) for _ in range(conc)))  # warm up
        lat.clear(), ttft.clear()
        events = 0
        cpu0 = tree_cpu_s(cpu_pid) if cpu_pid else 0.0
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(t0 + duration) for _ in range(conc)))
        secs = time.perf_counter() - t0
        cpu = (tree_cpu_s(cpu_pid) - cpu0) if cpu_pid else 0.0
    return Result(len(lat), secs, lat, ttft, events, cpu)


def fmt(x: float, spec: str) -> str:
    return "" if x != x else format(x, spec)  # NaN -> blank


async def one_run(
    a: argparse.Namespace, ports: dict[str, int], router_pid: int
) -> dict[str, dict[int, float]]:
    """One pass over every cell; prints its table and returns the summary figures by concurrency."""
    concs = [int(c) for c in a.concurrency.split(",")]
    summary: dict[str, dict[int, float]] = {}
    print("| mode | conc | path | req/s | p50 ms | p99 ms | TTFT p50 ms | events/s | router CPU µs/req |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for conc in concs:
        res: dict[tuple[str, str], Result] = {}
        for mode in MODES:
            tokens = a.long_tokens if mode == "long" else a.tokens
            for name in ("direct", "router"):
                port = (
                    ports["router"] if name == "router" else ports["stream" if mode != "plain" else "plain"]
                )
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                pid = router_pid if name == "router" else None
                x = res[mode, name] = await load(url, conc, a.duration, mode, tokens, pid)
                streamed = mode != "plain"
                print(
                    f"| {mode} | {conc} | {name} | {x.rps:.0f} | {x.p(x.lat, 0.5):.2f} | "
                    f"{x.p(x.lat, 0.99):.2f} | "
                    f"{fmt(x.p(x.ttft, 0.5), '.2f') if streamed else ''} | "
                    f"{x.events / x.secs if streamed else float('nan'):.0f} | "
                    f"{fmt(x.cpu_us_req, '.0f') if name == 'router' else ''} |".replace("| nan |", "|  |")
                )
            d, r = res[mode, "direct"], res[mode, "router"]
            added = r.p(r.lat, 0.5) - d.p(d.lat, 0.5)
            print(f"| {mode} | {conc} | router/direct | {r.rps / d.rps:.2f}x | {added:+.2f} | | | | |")
            summary.setdefault(f"{mode} ratio", {})[conc] = r.rps / d.rps
            summary.setdefault(f"{mode} added p50 ms", {})[conc] = added
            summary.setdefault(f"{mode} CPU µs/req", {})[conc] = r.cpu_us_req
        s, lg = res["stream", "router"], res["long", "router"]
        summary.setdefault("stream TTFT added ms", {})[conc] = s.p(s.ttft, 0.5) - res["stream", "direct"].p(
            res["stream", "direct"].ttft, 0.5
        )
        slope = (lg.cpu_us_req - s.cpu_us_req) / (lg.events_req - s.events_req)
        summary.setdefault("CPU µs/chunk (slope)", {})[conc] = slope
    summary.setdefault("router RSS MB", {})[0] = rss_mb(router_pid)
    return summary


async def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--long-tokens", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    ncpu = os.cpu_count() or 1
    router_cpus, other_cpus = ("0", f"1-{ncpu - 1}") if ncpu >= 2 else (None, None)
    if other_cpus:
        os.sched_setaffinity(0, set(range(1, ncpu)))
    ports = {"plain": free_port(), "stream": free_port(), "router": free_port()}
    mock = spawn(["mock", "--port", str(ports["plain"]), "--models", "m1"], other_cpus)
    smock = spawn(
        ["mock", "--port", str(ports["stream"]), "--models", "m2", "--itl-ms", STREAM_ITL_MS], other_cpus
    )
    workers = [f"http://127.0.0.1:{ports[k]}" for k in ("plain", "stream")]
    router = spawn(
        ["router", "--port", str(ports["router"]), "--worker-url", workers[0], "--worker-url", workers[1]],
        router_cpus,
    )
    try:
        for w in workers:
            await wait_ready(w + "/v1/models")
        await wait_ready(f"http://127.0.0.1:{ports['router']}/health", want_healthy=2)
        print(
            f"router pinned to CPU {router_cpus or '-'}, mocks + load on {other_cpus or '-'}; "
            f"{a.duration:g} s per cell, streams of {a.tokens} and {a.long_tokens} tokens\n"
        )
        runs = []
        for i in range(a.repeat):
            if a.repeat > 1:
                print(f"\nrun {i + 1}/{a.repeat}\n")
            runs.append(await one_run(a, ports, router.pid))
        print(f"\nsummary (median of {len(runs)} run(s); ratio = router req/s / direct req/s)\n")
        concs = sorted(runs[0]["plain ratio"])
        print("| figure | " + " | ".join(f"c={c}" for c in concs) + " |")
        print("|---|" + "---:|" * len(concs))
        for key in runs[0]:
            if key == "router RSS MB":
                continue
            vals = [statistics.median(r[key][c] for r in runs) for c in concs]
            spec = ".2f" if "ratio" in key or "ms" in key else ".1f" if "chunk" in key else ".0f"
            print(f"| {key} | " + " | ".join(fmt(v, spec) for v in vals) + " |")
        print(f"\nrouter RSS after the runs: {max(r['router RSS MB'][0] for r in runs):.0f} MB")
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
