"""The router's pick in-process: Pool.try_acquire + release per policy, at 2, 100 and 1,000 instances.

    .venv/bin/python bench/select_cost.py [--sizes 2,100,1000] [--n 20000] [--repeat 5] [--in-flight]

No sockets, so no noise from the network stack or other processes' load: the figure is the
best of ``--repeat`` runs of ``--n`` picks (µs per pick), for the fleet-size part of a request's
CPU that bench/fleet_size.py measures end to end. Each pick carries a chat body (a shared system
prompt and a user turn, as cache_aware and prefix_affinity see it); instances are healthy, one
request is in flight on each of a few of them. Each pick's request is answered before the next
(for cache_aware: its prefill is over), or with ``--in-flight`` never (non-streamed requests
still in flight: cache_aware must tell what each candidate has computed).
"""

from __future__ import annotations

import argparse
import time

from corral.router import policies
from corral.router.context import RequestContext
from corral.router.instance import Instance
from corral.router.pool import Pool

POLICIES = ("round_robin", "least_outstanding", "power_of_two", "prefix_affinity", "cache_aware")


def measure(policy: str, n: int, picks: int, answered: bool = True) -> float:
    select = policies.load(policy)
    pool = Pool()
    for i in range(n):
        pool.upsert(Instance(f"http://10.0.{i // 250}.{i % 250}:8000", ("m",), id=f"i{i}", state="healthy"))
    busy = [pool.try_acquire("m", select, None) for _ in range(min(n, 3))]
    system = "you are a helpful assistant " * 40
    ctxs = [
        RequestContext("r", {"model": "m", "messages": [{"role": "system", "content": system}, {"role": "user", "content": f"q{k}"}]}, None, None)  # noqa: E501
        for k in range(64)
    ]  # fmt: skip
    for ctx in ctxs:  # warm: prefix_affinity builds its ring once per change of the instance set
        inst = pool.try_acquire("m", select, ctx)
        assert inst is not None
        pool.release(inst)
        if ctx.prefill is not None:
            ctx.prefill.finish()
    t0 = time.perf_counter()
    for k in range(picks):
        ctx = ctxs[k & 63]
        inst = pool.try_acquire("m", select, ctx)
        assert inst is not None
        pool.release(inst)
        if answered and ctx.prefill is not None:  # as the proxy does at the first byte / the end
            ctx.prefill.finish()
    elapsed = time.perf_counter() - t0
    for b in busy:
        if b is not None:
            pool.release(b)
    return elapsed / picks * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes", default="2,100,1000")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--in-flight", action="store_true", help="never answer: every prefill stays in flight")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    print("| policy | " + " | ".join(f"{n} inst. µs" for n in sizes) + f" | {sizes[-1]} / {sizes[0]} |")
    print("|---|" + "---:|" * (len(sizes) + 1))
    for policy in POLICIES:
        vals = [min(measure(policy, n, a.n, not a.in_flight) for _ in range(a.repeat)) for n in sizes]
        print(f"| {policy} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {vals[-1] / vals[0]:.2f}x |")


if __name__ == "__main__":
    main()
