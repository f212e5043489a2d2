"""Tokens/s of Gemma 3 270M on llama.cpp (CPU): direct to one replica vs through corral's router.

Brings ``examples/llamacpp.toml`` up on free ports (two replicas, one thread each), then, in the
same run, sends the same greedy requests:

1. direct to replica 0, one at a time;
2. through the router, one at a time, alternating with (1) request by request so that noise
   from other load on the machine hits both alike (the router's share is the difference);
3. through the router, ``--concurrency`` (4) at a time, spread over both replicas.

Tokens are the ``usage.completion_tokens`` the server reports; tokens/s = tokens / wall time.
Needs the llamacpp extra (``make e2e-real`` installs it). Run::

    .venv/bin/python bench/llamacpp_tokens.py [--requests 12] [--max-tokens 64] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests" / "real")]

from llamacpp_fleet import ALIAS, assemble_model, check_install, make_fleet  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402
from openai.types.chat import ChatCompletionMessageParam  # noqa: E402

PROMPT: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a long story about a lighthouse keeper."}
]


@dataclass
class Result:
    label: str
    requests: int
    tokens: int
    wall_s: float
    latencies: list[float]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    def row(self) -> str:
        p50 = statistics.median(self.latencies)
        return (
            f"| {self.label} | {self.requests} | {self.tokens} | {self.wall_s:.2f} | "
            f"{self.tokens_per_s:.1f} | {p50:.2f} |"
        )


async def one(client: AsyncOpenAI, max_tokens: int) -> tuple[float, int]:
    """One greedy chat completion: (seconds, completion tokens)."""
    t = time.perf_counter()
    r = await client.chat.completions.create(
        model=ALIAS,
        messages=PROMPT,
        max_tokens=max_tokens,
        temperature=0,
    )
    assert r.usage is not None
    return time.perf_counter() - t, r.usage.completion_tokens


def _client(base_url: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)


async def interleaved(direct_url: str, router_url: str, n: int, max_tokens: int) -> tuple[Result, Result]:
    """``n`` requests each way, one at a time, alternating, so machine noise hits both alike."""
    direct, router = _client(direct_url), _client(router_url)
    res = {"direct": Result("direct to one replica, 1 at a time", 0, 0, 0.0, []),
           "router": Result("router, 1 at a time", 0, 0, 0.0, [])}  # fmt: skip
    try:
        for i in range(2 * n):
            key, c = ("direct", direct) if i % 2 == 0 else ("router", router)
            secs, tokens = await one(c, max_tokens)
            r = res[key]
            r.requests, r.tokens, r.wall_s = r.requests + 1, r.tokens + tokens, r.wall_s + secs
            r.latencies.append(secs)
    finally:
        await direct.close()
        await router.close()
    return res["direct"], res["router"]


async def concurrent(base_url: str, label: str, n: int, concurrency: int, max_tokens: int) -> Result:
    """``n`` requests, ``concurrency`` at a time; tokens/s over the wall time of the batch."""
    client = _client(base_url)
    sem = asyncio.Semaphore(concurrency)
    done: list[tuple[float, int]] = []

    async def limited() -> None:
        async with sem:
            done.append(await one(client, max_tokens))

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(limited() for _ in range(n)))
    finally:
        await client.close()
    wall = time.perf_counter() - t0
    return Result(label, n, sum(t for _, t in done), wall, [s for s, _ in done])


async def bench(args: argparse.Namespace, router: str, direct: str) -> list[Result]:
    n, mt = args.requests, args.max_tokens
    await interleaved(direct, router, 2, mt)  # warm-up: page faults, caches, connections
    d, r = await interleaved(direct, router, n, mt)
    c = args.concurrency
    spread = await concurrent(router, f"router, 2 replicas, {c} at a time", n, c, mt)
    return [d, r, spread]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=12, help="requests per case")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    problem = check_install()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        base = Path(tmp)
        assemble_model(base)
        fleet = make_fleet(base)
        try:
            up = fleet.up(timeout=300)
            if up.returncode != 0:
                print(f"corral up failed:\n{up.stdout}\n{up.stderr}", file=sys.stderr)
                return 1
            results = asyncio.run(bench(args, f"{fleet.router}/v1", f"{fleet.backend_url(0)}/v1"))
        finally:
            fleet.down()
    print(
        f"Gemma 3 270M Q4_K_M, llama-cpp-python, 1 thread per replica, max_tokens {args.max_tokens}, greedy\n"
    )
    print("| case | requests | completion tokens | wall s | tokens/s | p50 latency s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(r.row())
    direct, routed, spread = results
    print(
        f"\nrouter / direct (1 at a time): {routed.tokens_per_s / direct.tokens_per_s:.3f}; "
        f"2 replicas x {args.concurrency} / 1 replica: {spread.tokens_per_s / direct.tokens_per_s:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
