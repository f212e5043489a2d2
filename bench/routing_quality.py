"""Routing quality: multi-turn chat sessions against 4 engine-like mocks, once per router policy.

    .venv/bin/python bench/routing_quality.py [--sessions 120] [--turns 6] [--concurrency 16]
        [--variants base,slow,hot,plain,think] [--systems round_robin,...,sglang] [--json FILE]
    .venv/bin/python bench/routing_quality.py --short      # the smoke test's size (seconds;
                                                           # shared mocks, 1 ms per token)

Workload (seeded, the same for every system): ``--sessions`` users, each a chat of ``--turns``
turns; each session opens with one of 4 shared system prompts (300/500/700/900 words, picked
uniformly, or 70% the first one in the ``hot`` variant); each user turn has 20-150 words
(uniform), each answer 16-64 tokens (uniform, ``ignore_eos``), and the answer becomes part of
the next turn's history. ``--concurrency`` sessions run at a time (a new one starts when one
ends); in the ``think`` variant a user waits 0-400 ms (uniform) before each next turn. The
sessions start ``--settle-s`` (1 s) after the router is ready, for every system.

Replicas: 4 ``corral mock`` processes in engine-like mode, fresh for every system (empty caches):
prefix cache ``--cache-tokens`` (LRU of 16-token blocks), ``--prefill-ms`` per uncached prompt
token on one prefill lane, ``--itl-ms`` per output token, ``--max-num-seqs`` batch slots. In the
``slow`` variant replica 0 is 3x slower in all three. Variants: ``base`` (streaming, equal
replicas), ``slow``, ``hot``, ``plain`` (non-streaming), ``think``.

Systems: corral's router with each policy, and SGLang's router (``sglang-router``, a dev
dependency) with its ``cache_aware`` policy, on the same mocks. Reported per system: the prefix
cache hit rate (hit tokens / prompt tokens, from the mocks' vLLM counters), the ceiling (one
infinite cache seeing every prompt), TTFT p50/p99 (streams: first content byte; non-streamed:
the whole answer; "warm": less the first turns of the first ``--concurrency`` sessions, which
meet empty caches at once whatever the router does), requests/s, and the share of requests of
each replica (max/min, and the slow replica's share).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from corral.mock.engine import PrefixCache, block_hashes

CORRAL_POLICIES = ("round_robin", "least_outstanding", "prefix_affinity", "cache_aware")
VARIANTS = ("base", "slow", "hot", "plain", "think")
SYSTEM_WORDS = (300, 500, 700, 900)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- workload -----------------------------------------------------------------------------
@dataclass
class Session:
    sid: int
    system: str
    users: list[str]
    answer_tokens: list[int]


def workload(a: argparse.Namespace, variant: str, salt: str) -> list[Session]:
    """The sessions of one run (``salt`` keeps runs on shared mocks apart)."""
    rng = random.Random(a.seed)
    systems = [" ".join(f"{salt}s{k}w{j}" for j in range(n)) for k, n in enumerate(SYSTEM_WORDS)]
    out = []
    for sid in range(a.sessions):
        if variant == "hot":
            k = 0 if rng.random() < 0.7 else rng.randrange(1, 4)
        else:
            k = rng.randrange(4)
        users = [
            " ".join(f"{salt}u{sid}t{t}w{j}" for j in range(rng.randint(20, 150))) for t in range(a.turns)
        ]
        out.append(Session(sid, systems[k], users, [rng.randint(16, 64) for _ in range(a.turns)]))
    return out


def mock_prompt(messages: list[dict[str, str]]) -> str:
    """The text the mock tokenises (corral.mock.params.chat): roles and contents, one per line."""
    return "\n".join(part for m in messages for part in (m["role"], m["content"]))


# -- processes ------------------------------------------------------------------------------
def spawn(argv: list[str], log: str | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


async def wait_ok(s: aiohttp.ClientSession, url: str, timeout: float = 90.0, check: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with s.get(url) as r:
                if r.status == 200 and (check is None or check(await r.json(content_type=None))):
                    return
        except (aiohttp.ClientError, ValueError):
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout:g} s")


def mock_argv(a: argparse.Namespace, port: int, slow: float) -> list[str]:
    return [
        sys.executable, "-m", "corral", "mock", "--port", str(port), "--models", "m",
        "--prefix-cache-tokens", str(a.cache_tokens), "--block-size", "16",
        "--prefill-ms-per-token", str(a.prefill_ms * slow), "--itl-ms", str(a.itl_ms * slow),
        "--ttft-ms", str(a.ttft_ms * slow), "--max-num-seqs", str(a.max_num_seqs),
    ]  # fmt: skip


def router_argv(system: str, port: int, workers: list[str]) -> list[str]:
    if system == "sglang":
        return [
            sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(port),
            "--worker-urls", *workers, "--policy", "cache_aware", "--log-level", "warn",
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
            "--worker-startup-check-interval", "1",
        ]  # fmt: skip
    argv = [sys.executable, "-m", "corral", "router", "--port", str(port), "--policy", system]
    for w in workers:
        argv += ["--worker-url", w]
    return argv


# -- one run --------------------------------------------------------------------------------
@dataclass
class Result:
    ttft: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)  # less the cold start's first wave
    errors: int = 0
    requests: int = 0
    seconds: float = 0.0
    prompts: list[str] = field(default_factory=list)


async def run_sessions(
    s: aiohttp.ClientSession, base: str, sessions: list[Session], a: argparse.Namespace, variant: str
) -> Result:
    res = Result()
    stream = variant != "plain"
    think = variant == "think"
    todo = list(sessions)
    rng = random.Random(a.seed + 1)

    def took(seconds: float, sid: int, t: int) -> None:
        res.ttft.append(seconds)
        if t or sid >= a.concurrency:  # the first wave meets empty caches whatever the router
            res.warm.append(seconds)

    async def turn(messages: list[dict[str, str]], tokens: int, sid: int, t: int) -> str:
        body = {
            "model": "m",
            "messages": messages,
            "max_tokens": tokens,
            "ignore_eos": True,
            "stream": stream,
        }
        res.prompts.append(mock_prompt(messages))
        t0 = time.perf_counter()
        async with s.post(f"{base}/v1/chat/completions", json=body) as r:
            if r.status != 200:
                res.errors += 1
                await r.read()
                return ""
            if not stream:
                doc = await r.json()
                took(time.perf_counter() - t0, sid, t)
                return str(doc["choices"][0]["message"]["content"])
            parts: list[str] = []
            first = True
            buf = b""
            async for chunk in r.content.iter_any():
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if not line.startswith(b"data: {"):
                        continue
                    delta = json.loads(line[6:])["choices"]
                    if delta and delta[0]["delta"].get("content"):
                        if first:
                            took(time.perf_counter() - t0, sid, t)
                            first = False
                        parts.append(delta[0]["delta"]["content"])
            return "".join(parts)

    async def user() -> None:
        while todo:
            sess = todo.pop(0)
            messages = [{"role": "system", "content": sess.system}]
            for t, text in enumerate(sess.users):
                if t and think:
                    await asyncio.sleep(rng.uniform(0, 0.4))
                messages.append({"role": "user", "content": text})
                answer = await turn(messages, sess.answer_tokens[t], sess.sid, t)
                res.requests += 1
                messages.append({"role": "assistant", "content": answer})

    t0 = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(a.concurrency)))
    res.seconds = time.perf_counter() - t0
    return res


_METRIC = re.compile(r"^(vllm:prefix_cache_(?:queries|hits)_total)\{[^}]*\} (\S+)$", re.M)


async def mock_counters(s: aiohttp.ClientSession, url: str) -> tuple[float, float, int]:
    """(prefix-cache queries, hits, completed requests) of one mock."""
    async with s.get(f"{url}/metrics") as r:
        m = {k: float(v) for k, v in _METRIC.findall(await r.text())}
    async with s.get(f"{url}/stats") as r:
        done = int((await r.json())["completed"])
    return m["vllm:prefix_cache_queries_total"], m["vllm:prefix_cache_hits_total"], done


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def ceiling(prompts: list[str]) -> float:
    cache = PrefixCache(1 << 40, 16)
    for p in prompts:
        hashes = block_hashes(p, 16)
        cache.match(hashes, len(p.split()))
        cache.insert(hashes)
    return cache.hits / cache.queries if cache.queries else float("nan")


async def one(
    s: aiohttp.ClientSession,
    a: argparse.Namespace,
    variant: str,
    system: str,
    mocks: list[str],
    salt: str,
    started: tuple[int, subprocess.Popen[bytes]] | None = None,
) -> dict[str, Any]:
    """One system's run on ``mocks`` (its router started here, or ``started``: (port, process))."""
    if started is None:
        port = free_port()
        router = spawn(router_argv(system, port, mocks), a.log)
    else:
        port, router = started
    base = f"http://127.0.0.1:{port}"
    try:
        if system == "sglang":
            await wait_ok(s, f"{base}/readiness")
        else:
            await wait_ok(s, f"{base}/health", check=lambda d: d.get("healthy", 0) >= len(mocks))
        # Every system alike: a router may look at its engines first (corral's speed probe).
        await asyncio.sleep(a.settle_s if a.settle_s is not None else 0.0 if a.short else 1.0)
        before = [await mock_counters(s, m) for m in mocks]
        res = await run_sessions(s, base, workload(a, variant, salt), a, variant)
        after = [await mock_counters(s, m) for m in mocks]
    finally:
        stop([router])
    q = sum(x[0] - y[0] for x, y in zip(after, before, strict=True))
    h = sum(x[1] - y[1] for x, y in zip(after, before, strict=True))
    per = [x[2] - y[2] for x, y in zip(after, before, strict=True)]
    total = sum(per) or 1
    return {
        "variant": variant,
        "system": "sglang cache_aware" if system == "sglang" else f"corral {system}",
        "hit_rate": h / q if q else float("nan"),
        "ceiling": ceiling(res.prompts),
        "ttft_p50_ms": pct(res.ttft, 0.5),
        "ttft_p99_ms": pct(res.ttft, 0.99),
        "ttft_p99_warm_ms": pct(res.warm, 0.99),
        "req_per_s": res.requests / res.seconds if res.seconds else float("nan"),
        "max_share": max(per) / total,
        "min_share": min(per) / total,
        "replica0_share": per[0] / total,
        "errors": res.errors,
        "requests": res.requests,
    }


async def start_mocks(
    s: aiohttp.ClientSession, a: argparse.Namespace, variant: str
) -> tuple[list[str], list[Any]]:
    ports = [free_port() for _ in range(4)]
    procs = [
        spawn(mock_argv(a, p, 3.0 if variant == "slow" and i == 0 else 1.0), a.log)
        for i, p in enumerate(ports)
    ]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for u in urls:
            await wait_ok(s, f"{u}/health")
    except BaseException:
        stop(procs)
        raise
    return urls, procs


async def main(a: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as s:
        for variant in a.variants:
            if a.short:
                rows += await short_variant(s, a, variant)
                continue
            for n, system in enumerate(a.systems):
                mocks, procs = await start_mocks(s, a, variant)
                try:
                    row = await one(s, a, variant, system, mocks, salt=f"r{n}")
                finally:
                    stop(procs)
                rows.append(row)
                print(table([row], head=False), flush=True)
    return rows


async def short_variant(
    s: aiohttp.ClientSession, a: argparse.Namespace, variant: str
) -> list[dict[str, Any]]:
    """The smoke test's way: one set of mocks for every system (prompts salted apart), and every
    router started at once, so that their start-up overlaps (seconds, not minutes)."""
    mocks, procs = await start_mocks(s, a, variant)
    routers: list[tuple[int, subprocess.Popen[bytes]]] = []
    rows = []
    try:
        for system in a.systems:
            port = free_port()
            routers.append((port, spawn(router_argv(system, port, mocks), a.log)))
        for n, system in enumerate(a.systems):
            rows.append(await one(s, a, variant, system, mocks, salt=f"r{n}", started=routers[n]))
            print(table(rows[-1:], head=False), flush=True)
    finally:
        stop([p for _, p in routers] + procs)
    return rows


HEAD = (
    "| variant | system | hit rate (ceiling) | TTFT p50 ms | TTFT p99 ms | p99 warm ms | req/s "
    "| max / min share | replica 0 share | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def table(rows: list[dict[str, Any]], head: bool = True) -> str:
    out = [HEAD] if head else []
    for r in rows:
        out.append(
            f"| {r['variant']} | {r['system']} | {r['hit_rate']:.1%} ({r['ceiling']:.1%}) "
            f"| {r['ttft_p50_ms']:.0f} | {r['ttft_p99_ms']:.0f} | {r['ttft_p99_warm_ms']:.0f} "
            f"| {r['req_per_s']:.1f} "
            f"| {r['max_share']:.0%} / {r['min_share']:.0%} | {r['replica0_share']:.0%} | {r['errors']} |"
        )
    return "\n".join(out)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sessions", type=int, default=120)
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--systems", default=",".join((*CORRAL_POLICIES, "sglang")))
    ap.add_argument("--cache-tokens", type=int, default=32768)
    ap.add_argument("--prefill-ms", type=float, default=0.1, help="per uncached prompt token")
    ap.add_argument("--itl-ms", type=float, default=None, help="per output token (4; 1 with --short)")
    ap.add_argument("--ttft-ms", type=float, default=2.0)
    ap.add_argument("--max-num-seqs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--settle-s",
        type=float,
        default=None,
        help="between a router's readiness and its first session (1; 0 with --short)",
    )
    ap.add_argument("--short", action="store_true", help="smoke-test size: 8 sessions x 3 turns, base only")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--log", default=None, help="append the children's output to this file")
    a = ap.parse_args(argv)
    if a.itl_ms is None:
        a.itl_ms = 1.0 if a.short else 4.0
    if a.short:
        a.sessions, a.turns, a.concurrency = 8, 3, 4
        if "--variants" not in (argv or sys.argv):
            a.variants = "base"
    a.variants = a.variants.split(",")
    a.systems = a.systems.split(",")
    return a


if __name__ == "__main__":
    args = parse()
    result = asyncio.run(main(args))
    print("\n" + table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
