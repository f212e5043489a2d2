"""Router CPU per request against the size of the fleet: 2, 100 and 1,000 instances of one model.

    .venv/bin/python bench/fleet_size.py [--sizes 2,100,1000] [--duration 4] [--concurrency 32]
        [--policies round_robin,least_outstanding,power_of_two,prefix_affinity,cache_aware]
        [--baseline /work/main/src] [--repeat 1]

A registry holds N instances of model ``m1`` (healthy, long leases), registered alternately on two
real `corral mock` processes, so each instance is distinct to the router (its own id) while
the machine runs only two backends. For each size and policy a router watching the registry is
started, pinned to CPU 0 (mocks and load on the others), waits until it sees N healthy
instances, and takes ``--concurrency`` connections of non-streamed chat for ``--duration`` s; the
figure is the router's CPU per request. Sizes and policies are interleaved (one registry per
size, all up at once) and ``--repeat`` rounds give medians, so load drift is not read as a
ratio. ``--baseline SRC`` also runs a second corral (its ``src`` directory, e.g. main's) in the
same run, side by side. Goal (issue 20): within +10% from 2 to
1,000 instances, for every policy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys

import aiohttp
from router_overhead import free_port, load, wait_ready

POLICIES = ("round_robin", "least_outstanding", "power_of_two", "prefix_affinity", "cache_aware")


def spawn(args: list[str], cpus: str | None, src: str | None = None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "corral", *args]
    if cpus:
        argv = ["taskset", "-c", cpus, *argv]
    env = {**os.environ, **({"PYTHONPATH": src} if src else {})}
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env
    )


async def register(registry: str, n: int, mocks: list[str]) -> None:
    """N healthy instances of ``m1``, alternating between the mocks."""
    async with aiohttp.ClientSession() as s:
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            body = {
                "service": f"fleet-{i}",  # the registry derives the id from service + url
                "url": mocks[i % len(mocks)],
                "models": ["m1"],
                "state": "healthy",
                "lease_ttl_s": 3600,
                "metadata": {"replica": i},
            }
            async with sem, s.post(f"{registry}/v1/instances", json=body) as r:
                r.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(n)))


def stop(p: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(p.pid, 15)
    except ProcessLookupError:
        return
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        p.wait()


async def cell(
    registry: str, n: int, policy: str, a: argparse.Namespace, src: str | None, cpus: str | None
) -> float:
    port = free_port()
    router = spawn(["router", "--port", str(port), "--registry-url", registry, "--policy", policy], cpus, src)
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_ready(f"{base}/health", want_healthy=n)
        res = await load(f"{base}/v1/chat/completions", a.concurrency, a.duration, "plain", 16, router.pid)
        return res.cpu_us_req
    finally:
        stop(router)


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes", default="2,100,1000")
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--baseline", default=None, help="src directory of another corral to compare")
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    a.baseline = os.path.abspath(a.baseline) if a.baseline else None
    policies_dir = f"{a.baseline}/corral/router/policies"
    a.baseline_policies = {f[:-3] for f in os.listdir(policies_dir)} if a.baseline else set()
    return a


async def main(a: argparse.Namespace) -> None:
    ncpu = os.cpu_count() or 1
    router_cpus, other_cpus = ("0", f"1-{ncpu - 1}") if ncpu >= 2 else (None, None)
    if other_cpus:
        os.sched_setaffinity(0, set(range(1, ncpu)))
    sizes = [int(x) for x in a.sizes.split(",")]
    policies = a.policies.split(",")
    systems: list[tuple[str, str | None]] = [("this", None)]
    if a.baseline:
        systems.append(("baseline", a.baseline))
    mock_ports = [free_port(), free_port()]
    mocks = [spawn(["mock", "--port", str(p), "--models", "m1"], other_cpus) for p in mock_ports]
    mock_urls = [f"http://127.0.0.1:{p}" for p in mock_ports]
    table: dict[tuple[str, str, int], list[float]] = {}
    try:
        for u in mock_urls:
            await wait_ready(u + "/v1/models")
        # One registry per size, all up at once, and the cells interleaved (every size for a
        # policy, then the next policy, then the next repeat): the machine's load drifts over
        # minutes, and a size measured only at its own time would carry that drift as a ratio.
        regs: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
        try:
            for n in sizes:
                rport = free_port()
                reg = spawn(["registry", "--port", str(rport), "--log-level", "warning"], other_cpus)
                regs[n] = (f"http://127.0.0.1:{rport}", reg)
                await wait_ready(f"{regs[n][0]}/health")
                await register(regs[n][0], n, mock_urls)
            for _ in range(a.repeat):
                for policy in policies:
                    for n in sizes:
                        for name, src in systems:
                            if src and policy not in a.baseline_policies:
                                continue  # the baseline has no such policy
                            us = await cell(regs[n][0], n, policy, a, src, router_cpus)
                            table.setdefault((name, policy, n), []).append(us)
                            print(f"{name:8} {policy:18} n={n:5}  {us:6.1f} µs/req", flush=True)
        finally:
            for _, reg in regs.values():
                stop(reg)
    finally:
        for m in mocks:
            stop(m)
    print(f"\nrouter CPU µs per request, {a.concurrency} connections (median of {a.repeat})\n")
    print("| router | policy | " + " | ".join(f"{n} inst." for n in sizes) + f" | {sizes[-1]} / {sizes[0]} |")
    print("|---|---|" + "---:|" * (len(sizes) + 1))
    for name, _ in systems:
        for policy in policies:
            if (name, policy, sizes[0]) not in table:
                continue
            vals = [statistics.median(table[name, policy, n]) for n in sizes]
            cells = " | ".join(f"{v:.1f}" for v in vals)
            print(f"| {name} | {policy} | {cells} | {vals[-1] / vals[0]:.2f}x |")


if __name__ == "__main__":
    asyncio.run(main(parse()))
