"""Router overhead: the same load straight to a `corral mock` and through `corral router`, one run.

    .venv/bin/python bench/router_overhead.py [--duration 3] [--concurrency 1,16,64]
        [--tokens 16] [--long-tokens 256] [--repeat 1] [--baseline-src DIR]
        [--slow-streams 1000] [--slow-tokens 100] [--slow-itl-ms 20]

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

``--baseline-src DIR`` runs a second router from another checkout's ``src`` (for example
``git archive OLD:src | tar -x -C /tmp/old-src``) over the same mocks, pinned to the same CPU,
and every cell and figure gets an ``old`` column: before and after side by side in one run.

``--slow-streams N`` adds the many-slow-streams scenario: N concurrent streams of
``--slow-tokens`` events each, paced by a mock at ``--slow-itl-ms`` per event (a decode pace),
direct and through each router. Reported: router CPU per relayed chunk (its CPU over the window /
events), its peak RSS (sampled every 0.2 s), and the p99 of stream duration and TTFT, added over
direct. On a 2-CPU machine the mock and the load generator share one CPU, so the pace slips
under load: the per-chunk CPU stays comparable, the latencies less so.
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


def spawn(args: list[str], cpus: str | None, src: str | None = None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "corral", *args]
    if cpus:
        argv = ["taskset", "-c", cpus, *argv]
    env = {**os.environ, "PYTHONPATH": src} if src else None  # another checkout's corral
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env
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
    a: argparse.Namespace, ports: dict[str, int], routers: dict[str, tuple[int, int]]
) -> dict[str, dict[int, float]]:
    """One pass over every cell; prints its table and returns the summary figures by concurrency.

    ``routers``: name -> (port, pid); "router" is this checkout's, "old" a baseline's.
    """
    concs = [int(c) for c in a.concurrency.split(",")]
    summary: dict[str, dict[int, float]] = {}
    print("| mode | conc | path | req/s | p50 ms | p99 ms | TTFT p50 ms | events/s | router CPU µs/req |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for conc in concs:
        res: dict[tuple[str, str], Result] = {}
        for mode in MODES:
            tokens = a.long_tokens if mode == "long" else a.tokens
            for name in ("direct", *routers):
                if name == "direct":
                    port, pid = ports["stream" if mode != "plain" else "plain"], None
                else:
                    port, pid = routers[name]
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                x = res[mode, name] = await load(url, conc, a.duration, mode, tokens, pid)
                streamed = mode != "plain"
                print(
                    f"| {mode} | {conc} | {name} | {x.rps:.0f} | {x.p(x.lat, 0.5):.2f} | "
                    f"{x.p(x.lat, 0.99):.2f} | "
                    f"{fmt(x.p(x.ttft, 0.5), '.2f') if streamed else ''} | "
                    f"{x.events / x.secs if streamed else float('nan'):.0f} | "
                    f"{fmt(x.cpu_us_req, '.0f') if name != 'direct' else ''} |".replace("| nan |", "|  |")
                )
            d = res[mode, "direct"]
            for name in routers:
                r = res[mode, name]
                sfx = "" if name == "router" else f" ({name})"
                added = r.p(r.lat, 0.5) - d.p(d.lat, 0.5)
                print(f"| {mode} | {conc} | {name}/direct | {r.rps / d.rps:.2f}x | {added:+.2f} | | | | |")
                summary.setdefault(f"{mode} ratio{sfx}", {})[conc] = r.rps / d.rps
                summary.setdefault(f"{mode} added p50 ms{sfx}", {})[conc] = added
                summary.setdefault(f"{mode} CPU µs/req{sfx}", {})[conc] = r.cpu_us_req
        for name in routers:
            sfx = "" if name == "router" else f" ({name})"
            s, lg, sd = res["stream", name], res["long", name], res["stream", "direct"]
            summary.setdefault(f"stream TTFT added ms{sfx}", {})[conc] = s.p(s.ttft, 0.5) - sd.p(sd.ttft, 0.5)
            slope = (lg.cpu_us_req - s.cpu_us_req) / (lg.events_req - s.events_req)
            summary.setdefault(f"CPU µs/chunk (slope){sfx}", {})[conc] = slope
    for name, (_, pid) in routers.items():
        summary.setdefault(f"router RSS MB{'' if name == 'router' else f' ({name})'}", {})[0] = rss_mb(pid)
    return summary


async def slow_streams(url: str, n: int, tokens: int, pid: int | None) -> dict[str, float]:
    """``n`` concurrent paced streams once: CPU per chunk and peak RSS of ``pid``, p99 latencies."""
    body = BODY % (b"m3", tokens, b', "stream": true, "ignore_eos": true')
    headers = {"Content-Type": "application/json"}
    lat: list[float] = []
    ttft: list[float] = []
    events = 0
    failed = 0
    peak = 0.0
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:

        async def one() -> None:
            nonlocal events, failed
            t0 = time.perf_counter()
            try:
                async with s.post(url, data=body, headers=headers) as r:
                    if r.status != 200:  # an error answer is a failed stream, not one of 0 events
                        failed += 1
                        await r.read()
                        return
                    first = True
                    async for data in r.content.iter_any():
                        if first:
                            ttft.append(time.perf_counter() - t0)
                            first = False
                        events += data.count(b"data:")
                lat.append(time.perf_counter() - t0)
            except (TimeoutError, aiohttp.ClientError, OSError):
                failed += 1

        async def sample() -> None:
            nonlocal peak
            while pid is not None:
                peak = max(peak, rss_mb(pid))
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        cpu0 = tree_cpu_s(pid) if pid else 0.0
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        secs = time.perf_counter() - t0
        cpu = (tree_cpu_s(pid) - cpu0) if pid else 0.0
        sampler.cancel()
    r = Result(len(lat), secs, lat, ttft, events, cpu)
    return {
        "secs": secs,
        "events": float(events),
        "failed": float(failed),
        "cpu_us_chunk": cpu / events * 1e6 if events and pid else float("nan"),
        "rss_peak_mb": peak if pid else float("nan"),
        "p99_ms": r.p(lat, 0.99),
        "ttft_p99_ms": r.p(ttft, 0.99),
    }


async def slow_scenario(
    a: argparse.Namespace, ports: dict[str, int], routers: dict[str, tuple[int, int]]
) -> None:
    """The many-slow-streams scenario, direct and through each router, one after the other."""
    print(
        f"\n{a.slow_streams} concurrent streams x {a.slow_tokens} events, paced at {a.slow_itl_ms} ms/event\n"
    )
    print(
        "| path | seconds | events | failed | router CPU µs/chunk | router RSS peak MB "
        "| p99 ms | TTFT p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    direct = await slow_streams(
        f"http://127.0.0.1:{ports['slow']}/v1/chat/completions", a.slow_streams, a.slow_tokens, None
    )
    rows = {"direct": direct}
    for name, (port, pid) in routers.items():
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        rows[name] = await slow_streams(url, a.slow_streams, a.slow_tokens, pid)
    for name, x in rows.items():
        print(
            f"| {name} | {x['secs']:.1f} | {x['events']:.0f} | {x['failed']:.0f} | "
            f"{fmt(x['cpu_us_chunk'], '.1f')} | "
            f"{fmt(x['rss_peak_mb'], '.0f')} | {x['p99_ms']:.0f} | {x['ttft_p99_ms']:.0f} |"
        )
    for name in routers:
        x = rows[name]
        print(
            f"| {name} - direct | | | | | | {x['p99_ms'] - direct['p99_ms']:+.0f} | "
            f"{x['ttft_p99_ms'] - direct['ttft_p99_ms']:+.0f} |"
        )


async def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--long-tokens", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--baseline-src", default=None, help="another checkout's src: its router runs too")
    ap.add_argument("--slow-streams", type=int, default=0, help="N paced streams (0: skip the scenario)")
    ap.add_argument("--slow-tokens", type=int, default=100)
    ap.add_argument("--slow-itl-ms", type=float, default=20.0)
    ap.add_argument("--skip-cells", action="store_true", help="only the slow-streams scenario")
    a = ap.parse_args()
    ncpu = os.cpu_count() or 1
    router_cpus, other_cpus = ("0", f"1-{ncpu - 1}") if ncpu >= 2 else (None, None)
    if other_cpus:
        os.sched_setaffinity(0, set(range(1, ncpu)))
    ports = {k: free_port() for k in ("plain", "stream", "slow", "router", "old")}
    mocks = [
        spawn(["mock", "--port", str(ports["plain"]), "--models", "m1"], other_cpus),
        spawn(
            ["mock", "--port", str(ports["stream"]), "--models", "m2", "--itl-ms", STREAM_ITL_MS], other_cpus
        ),
        spawn(
            ["mock", "--port", str(ports["slow"]), "--models", "m3", "--itl-ms", str(a.slow_itl_ms)],
            other_cpus,
        ),
    ]
    workers = [f"http://127.0.0.1:{ports[k]}" for k in ("plain", "stream", "slow")]
    wargs = [x for w in workers for x in ("--worker-url", w)]
    procs = {"router": spawn(["router", "--port", str(ports["router"]), *wargs], router_cpus)}
    if a.baseline_src:
        procs["old"] = spawn(["router", "--port", str(ports["old"]), *wargs], router_cpus, a.baseline_src)
    routers = {name: (ports[name], p.pid) for name, p in procs.items()}
    try:
        for w in workers:
            await wait_ready(w + "/v1/models")
        for name in procs:
            await wait_ready(f"http://127.0.0.1:{ports[name]}/health", want_healthy=3)
        print(
            f"router(s) {', '.join(procs)} pinned to CPU {router_cpus or '-'}, mocks + load on "
            f"{other_cpus or '-'}; {a.duration:g} s per cell, "
            f"streams of {a.tokens} and {a.long_tokens} tokens\n"
        )
        if not a.skip_cells:
            runs = []
            for i in range(a.repeat):
                if a.repeat > 1:
                    print(f"\nrun {i + 1}/{a.repeat}\n")
                runs.append(await one_run(a, ports, routers))
            print(f"\nsummary (median of {len(runs)} run(s); ratio = router req/s / direct req/s)\n")
            concs = sorted(runs[0]["plain ratio"])
            print("| figure | " + " | ".join(f"c={c}" for c in concs) + " |")
            print("|---|" + "---:|" * len(concs))
            for key in runs[0]:
                if key.startswith("router RSS MB"):
                    continue
                vals = [statistics.median(r[key][c] for r in runs) for c in concs]
                spec = ".2f" if "ratio" in key or "ms" in key else ".1f" if "chunk" in key else ".0f"
                print(f"| {key} | " + " | ".join(fmt(v, spec) for v in vals) + " |")
            for key in runs[0]:
                if key.startswith("router RSS MB"):
                    print(f"\n{key} after the runs: {max(r[key][0] for r in runs):.0f}")
        if a.slow_streams:
            await slow_scenario(a, ports, routers)
    finally:
        for p in (*procs.values(), *mocks):
            os.killpg(p.pid, 15)
            p.wait(10)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
