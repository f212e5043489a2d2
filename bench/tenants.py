"""Tenants: what keys + limits cost the router per request, and how the fair queue shares slots.

    .venv/bin/python bench/tenants.py overhead [--duration 4] [--concurrency 32] [--repeat 3]
    .venv/bin/python bench/tenants.py fairness [--duration 10] [--clients 32]

``overhead``: one fast `corral mock`, two routers over it, both pinned to CPU 0 (load and mock
on the others): ``none`` without keys, ``keys`` with 1,000 keys in a keys file, every key with
a model glob, ``max_concurrency``, ``rpm`` and ``tpm`` (high enough never to refuse), so each
request pays the lookup, the scope check, admission, the usage record and the tpm charge. The
load cycles through the 1,000 keys; the warm-up sends every key once first (a key's first
request also pays its sha256 and glob match: once per key and router process). The two routers
are measured alternately, ``--repeat`` times, in one run: router CPU per request (scheduler run
time of its process, as bench/router_overhead.py), and the difference.

``fairness``: a mock model with 2 slots (``max_concurrency`` 2, 20 ms per request), keys A and B
with ``--clients`` closed-loop clients each for ``--duration`` s; first A priority 1 and B
priority 5, then both priority 0. Per key: share of completed requests, and p50/p99 of the time
spent in the queue (latency minus the request's service time, measured alone first), plus the
requests refused (queue timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import tomli_w

sys.path.insert(0, str(Path(__file__).parent))
from router_overhead import free_port, spawn, tree_cpu_s, wait_ready

BODY = b'{"model": "m1", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}'


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def router_toml(path: Path, table: dict[str, object]) -> None:
    path.write_text(tomli_w.dumps({"router": table}))


async def drive(
    url: str, conc: int, duration: float, keys: list[str], pid: int | None
) -> tuple[int, float, list[tuple[str, float, int]]]:
    """Closed-loop clients (client i uses keys[i % len]); (requests, CPU s, [(key, latency, status)])."""
    done: list[tuple[str, float, int]] = []
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as s:

        async def worker(i: int, until: float, record: bool, at_least: int = 0) -> None:
            j = i
            while time.perf_counter() < until or j < at_least:
                key = keys[j % len(keys)] if keys else ""
                j += conc
                headers = {"Content-Type": "application/json"}
                if key:
                    headers["Authorization"] = "Bearer " + key
                t0 = time.perf_counter()
                async with s.post(url, data=BODY, headers=headers) as r:
                    await r.read()
                    if record:
                        done.append((key, time.perf_counter() - t0, r.status))

        # Warm up for 0.3 s and with every key once: a key's first request is its one-time cost
        # (sha256 of the key, scope globs, counters); the window measures the steady state.
        await asyncio.gather(*(worker(i, time.perf_counter() + 0.3, False, len(keys)) for i in range(conc)))
        cpu0 = tree_cpu_s(pid) if pid else 0.0
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i, t0 + duration, True) for i in range(conc)))
        cpu = (tree_cpu_s(pid) - cpu0) if pid else 0.0
    return len(done), cpu, done


async def overhead(a: argparse.Namespace) -> None:
    ncpu = os.cpu_count() or 1
    router_cpus, other_cpus = ("0", f"1-{ncpu - 1}") if ncpu >= 2 else (None, None)
    if other_cpus:
        os.sched_setaffinity(0, set(range(1, ncpu)))
    tmp = Path(tempfile.mkdtemp(prefix="corral-tenants-"))
    keys = [f"sk-bench-{i:04d}" for i in range(1000)]
    keys_file = tmp / "keys.toml"
    with open(keys_file, "w") as f:
        for i, k in enumerate(keys):
            f.write(
                f'[[keys]]\nname = "tenant-{i:04d}"\nkey_sha256 = "{sha(k)}"\nmodels = ["m*"]\n'
                f"max_concurrency = 1000\nrpm = 100000000\ntpm = 1000000000\npriority = {i % 3}\n\n"
            )
    mport, p_none, p_keys = free_port(), free_port(), free_port()
    mock = spawn(["mock", "--port", str(mport), "--models", "m1"], other_cpus)
    worker = f"http://127.0.0.1:{mport}"
    router_toml(tmp / "keys-router.toml", {"keys_file": str(keys_file)})
    r_none = spawn(["router", "--port", str(p_none), "--worker-url", worker], router_cpus)
    r_keys = spawn(
        ["router", "--port", str(p_keys), "--worker-url", worker, "--config", str(tmp / "keys-router.toml")],
        router_cpus,
    )
    try:
        await wait_ready(worker + "/v1/models")
        for p in (p_none, p_keys):
            await wait_ready(f"http://127.0.0.1:{p}/health", want_healthy=1)
        print(
            f"routers pinned to CPU {router_cpus or '-'}, mock + load on {other_cpus or '-'}; "
            f"{a.concurrency} connections, {a.duration:g} s per cell, non-streamed, 1,000 keys\n"
        )
        print("| run | router | req/s | router CPU µs/req |")
        print("|---:|---|---:|---:|")
        per: dict[str, list[float]] = {"none": [], "keys": []}
        for run in range(a.repeat):
            for name, port, pid, ks in (("none", p_none, r_none.pid, []), ("keys", p_keys, r_keys.pid, keys)):
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                n, cpu, results = await drive(url, a.concurrency, a.duration, ks, pid)
                assert all(st == 200 for _, _, st in results), {st for _, _, st in results}
                us = cpu / n * 1e6
                per[name].append(us)
                print(f"| {run + 1} | {name} | {n / a.duration:.0f} | {us:.1f} |")
        none, withkeys = statistics.median(per["none"]), statistics.median(per["keys"])
        diffs = [k - n for k, n in zip(per["keys"], per["none"], strict=True)]
        print(
            f"\nmedian router CPU/request: no keys {none:.1f} µs, 1,000 keys + limits {withkeys:.1f} µs; "
            f"added {withkeys - none:+.1f} µs (per run: {', '.join(f'{d:+.1f}' for d in diffs)})"
        )
    finally:
        for p in (r_none, r_keys, mock):
            os.killpg(p.pid, 15)
            p.wait(10)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def fairness(a: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="corral-fair-"))
    mport = free_port()
    mock = spawn(["mock", "--port", str(mport), "--models", "m1", "--ttft-ms", str(a.service_ms)], None)
    worker = f"http://127.0.0.1:{mport}"
    procs = [mock]
    try:
        await wait_ready(worker + "/v1/models")
        print(
            f"model with 2 slots ({a.service_ms:g} ms per request), {a.clients} closed-loop clients per key, "
            f"{a.duration:g} s per scenario, queue_timeout_s {a.queue_timeout:g}\n"
        )
        print("| scenario | key | priority | served | share | queue wait p50 ms | p99 ms | refused |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for scenario, (pa, pb) in (("A=1, B=5", (1, 5)), ("equal", (0, 0))):
            port = free_port()
            cfg = tmp / f"router-{port}.toml"
            router_toml(
                cfg,
                {
                    "max_concurrency": {worker: 2},
                    "queue_timeout_s": a.queue_timeout,
                    "queue_size": 4 * a.clients,
                    "keys": [
                        {"name": "A", "key_sha256": sha("key-a"), "priority": pa},
                        {"name": "B", "key_sha256": sha("key-b"), "priority": pb},
                    ],
                },
            )
            router = spawn(
                ["router", "--port", str(port), "--worker-url", worker, "--config", str(cfg)], None
            )
            procs.append(router)
            await wait_ready(f"http://127.0.0.1:{port}/health", want_healthy=1)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            # Service time alone (one request at a time, no queue), to subtract from latencies.
            _, _, alone = await drive(url, 1, 1.0, ["key-a"], None)
            service = statistics.median(lat for _, lat, _ in alone)
            _, _, results = await drive(url, 2 * a.clients, a.duration, ["key-a", "key-b"], None)
            ok = [r for r in results if r[2] == 200]
            for name, key, prio in (("A", "key-a", pa), ("B", "key-b", pb)):
                mine = [lat for k, lat, st in ok if k == key]
                refused = sum(1 for k, _, st in results if k == key and st != 200)
                waits = [max(0.0, lat - service) * 1000 for lat in mine]
                share = len(mine) / len(ok) if ok else float("nan")
                print(
                    f"| {scenario} | {name} | {prio} | {len(mine)} | {share:.1%} | "
                    f"{pct(waits, 0.5):.0f} | {pct(waits, 0.99):.0f} | {refused} |"
                )
            os.killpg(router.pid, 15)
            router.wait(10)
            procs.remove(router)
    finally:
        for p in procs:
            os.killpg(p.pid, 15)
            p.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--duration", type=float, default=4.0)
    o.add_argument("--concurrency", type=int, default=32)
    o.add_argument("--repeat", type=int, default=3)
    f = sub.add_parser("fairness")
    f.add_argument("--duration", type=float, default=10.0)
    f.add_argument("--clients", type=int, default=32)
    f.add_argument("--service-ms", type=float, default=20.0)
    f.add_argument("--queue-timeout", type=float, default=30.0)
    a = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(overhead(a) if a.what == "overhead" else fairness(a))


if __name__ == "__main__":
    main()
