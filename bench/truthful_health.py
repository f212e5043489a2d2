"""Truthful health under load: how fast a replica that cannot generate leaves rotation, and
whether a replica answering 400s is ever taken out.

    .venv/bin/python bench/truthful_health.py [--clients 16] [--hang-after 150] [--probe-interval 2]

Hang scenarios (two `corral mock` replicas of one model; one serves ``--hang-after`` inference
requests, then hangs every inference request while its /health and /v1/models keep answering
200), 16 clients (a quarter of them streaming), one row each, side by side:

- ``watchdog``: static workers; only the router's stall watchdog (response_s, first_token_s)
  and outlier ejection (3 stalls in a row) can notice.
- ``probe``: registry + two sitters with the generation probe (interval, timeout 1 s, 1 miss);
  outlier ejection off (1000 stalls), the watchdog still retries timed-out requests.
- ``both``: the defaults together.

Reported: seconds from the hang's onset (the hung replica's request count passing the limit)
until the router shows the replica out (``/workers`` ``out_reason``), that reason, requests
that failed (non-streamed, streamed) and the p99 latency. Then the 400 scenario: one of two
replicas answers 400 to 30% of requests; the circuit state and out_reason are polled
throughout: "circuit ever open" must stay no.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai

MSG = [{"role": "user", "content": "hello"}]


def free_port() -> int:
    """A free port whose port + 1 is free too (sitters listen there)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = int(s.getsockname()[1])
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", p + 1))
                return p
            except OSError:
                continue


class Procs:
    """Child `python -m corral` processes, each in its own process group, killed at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")
        p = subprocess.Popen(
            [sys.executable, "-m", "corral", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


async def wait_for(session: aiohttp.ClientSession, url: str, pred: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(url) as r:
                if r.status == 200:
                    doc = await r.json(content_type=None)
                    if pred(doc):
                        return doc
        except (aiohttp.ClientError, TimeoutError, OSError):
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {url}")


def router_toml(tmp: Path, name: str, table: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, values in table.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = tmp / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def load(
    router: str, model: str, clients: int, seconds: float
) -> tuple[int, int, int, int, list[float]]:
    """``clients`` loops for ``seconds``; every fourth one streams. (ok, failed plain, failed
    streams, streams, latencies)."""
    ok = failed_plain = failed_stream = streams = 0
    lat: list[float] = []
    end = time.monotonic() + seconds
    async with openai.AsyncOpenAI(base_url=router + "/v1", api_key="x", max_retries=0, timeout=120) as c:

        async def client(i: int) -> None:
            nonlocal ok, failed_plain, failed_stream, streams
            stream = i % 4 == 3
            while time.monotonic() < end:
                t0 = time.monotonic()
                try:
                    if stream:
                        streams += 1
                        s = await c.chat.completions.create(
                            model=model, messages=MSG, max_tokens=8, stream=True
                        )  # type: ignore[arg-type]
                        async for _ in s:
                            pass
                    else:
                        await c.chat.completions.create(model=model, messages=MSG, max_tokens=8)  # type: ignore[arg-type]
                    ok += 1
                    lat.append(time.monotonic() - t0)
                except openai.APIError:
                    if stream:
                        failed_stream += 1
                    else:
                        failed_plain += 1

        await asyncio.gather(*(client(i) for i in range(clients)))
    return ok, failed_plain, failed_stream, streams, lat


async def hang_scenario(kind: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    procs = Procs(tmp)
    mock_args = ["--ttft-ms", "5", "--itl-ms", "2"]
    try:
        rport = free_port()
        router = f"http://127.0.0.1:{rport}"
        outlier = {"consecutive_stalls": 1000} if kind == "probe" else {"consecutive_stalls": 3}
        cfg = router_toml(
            tmp,
            f"router-{kind}",
            {
                "router": {"policy": "round_robin"},
                "router.timeouts": {"response_s": args.response_s, "first_token_s": args.response_s},
                "router.outlier": outlier,
            },
        )
        ports = [free_port(), free_port()]
        hung_url = f"http://127.0.0.1:{ports[0]}"
        if kind == "watchdog":
            procs.start("hung", "mock", "--port", str(ports[0]), "--models", "m",
                        "--hang-generation-after", str(args.hang_after), *mock_args)  # fmt: skip
            procs.start("ok", "mock", "--port", str(ports[1]), "--models", "m", *mock_args)
            workers = [a for p in ports for a in ("--worker-url", f"http://127.0.0.1:{p}")]
            procs.start("router", "router", "--port", str(rport), "--config", str(cfg), *workers)
        else:
            reg = free_port()
            registry = f"http://127.0.0.1:{reg}"
            procs.start("registry", "registry", "--port", str(reg))
            probe = tmp / f"probe-{kind}.toml"
            probe.write_text(
                f"[generation_probe]\nenabled = true\ninterval_s = {args.probe_interval}\n"
                f"timeout_s = {args.probe_timeout}\nfailures = 1\n"
            )
            for i, port in enumerate(ports):
                extra = ["--hang-generation-after", str(args.hang_after)] if i == 0 else []
                procs.start(f"sitter-{kind}-{i}", "sit", "--service-type", "mock", "--port", str(port),
                            "--models", "m", "--registry-url", registry, "--heartbeat-interval", "2",
                            "--state-dir", str(tmp / f"state-{kind}"), "--config-file", str(probe),
                            "--args", " ".join([*mock_args, *extra]))  # fmt: skip
            procs.start(
                "router", "router", "--port", str(rport), "--config", str(cfg), "--registry-url", registry
            )
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            await wait_for(s, router + "/health", lambda d: d["healthy"] >= 2)
            onset: float | None = None
            out_at: float | None = None
            reason = None

            async def watch() -> None:
                nonlocal onset, out_at, reason
                while out_at is None:
                    now = time.monotonic()
                    if onset is None:
                        try:
                            async with s.get(hung_url + "/stats") as r:
                                if (await r.json())["total"] > args.hang_after:
                                    onset = now
                        except (aiohttp.ClientError, TimeoutError, OSError):
                            pass
                    else:
                        async with s.get(router + "/workers") as r:
                            for w in (await r.json())["workers"]:
                                if w["url"] == hung_url and w["out_reason"]:
                                    out_at, reason = time.monotonic(), w["out_reason"]
                    await asyncio.sleep(0.02)

            watcher = asyncio.create_task(watch())
            ok, failed_plain, failed_stream, streams, lat = await load(
                router, "m", args.clients, args.seconds
            )
            watcher.cancel()
        lat.sort()
        return {
            "scenario": kind,
            "out_after_s": round(out_at - onset, 2) if out_at and onset else None,
            "reason": reason,
            "ok": ok,
            "failed_plain": failed_plain,
            "failed_streams": f"{failed_stream}/{streams}",
            "p99_s": round(lat[int(len(lat) * 0.99) - 1], 3) if lat else None,
        }
    finally:
        procs.close()


async def bad_request_scenario(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    procs = Procs(tmp)
    try:
        ports = [free_port(), free_port()]
        bad = f"http://127.0.0.1:{ports[0]}"
        procs.start("bad", "mock", "--port", str(ports[0]), "--models", "m", "--error-400-rate", "0.3")
        procs.start("good", "mock", "--port", str(ports[1]), "--models", "m")
        rport = free_port()
        router = f"http://127.0.0.1:{rport}"
        workers = [a for p in ports for a in ("--worker-url", f"http://127.0.0.1:{p}")]
        procs.start("router400", "router", "--port", str(rport), *workers)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            await wait_for(s, router + "/health", lambda d: d["healthy"] >= 2)
            opened = False

            async def watch() -> None:
                nonlocal opened
                while True:
                    async with s.get(router + "/workers") as r:
                        for w in (await r.json())["workers"]:
                            if w["url"] == bad and (w["circuit"] != "closed" or w["out_reason"]):
                                opened = True
                    await asyncio.sleep(0.02)

            watcher = asyncio.create_task(watch())
            ok, failed_plain, failed_stream, _streams, _ = await load(router, "m", args.clients, args.seconds)
            watcher.cancel()
            async with s.get(bad + "/stats") as r:
                bad_stats = await r.json()
        return {
            "scenario": "400 x 30%",
            "ok": ok,
            "client_400s": failed_plain + failed_stream,
            "bad_replica_400s": bad_stats["failed"],
            "circuit_ever_open": opened,
        }
    finally:
        procs.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--hang-after", type=int, default=150)
    ap.add_argument("--probe-interval", type=float, default=2.0)
    ap.add_argument("--probe-timeout", type=float, default=1.0)
    ap.add_argument("--response-s", type=float, default=2.0)
    ap.add_argument("--only", choices=("watchdog", "probe", "both", "400"), default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="corral-health-"))
    rows = []
    try:
        for kind in ("watchdog", "probe", "both"):
            if args.only in (None, kind):
                rows.append(await hang_scenario(kind, args, tmp))
                print(json.dumps(rows[-1]), flush=True)
        if args.only in (None, "400"):
            rows.append(await bad_request_scenario(args, tmp))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nclients={args.clients} seconds={args.seconds} hang_after={args.hang_after} "
        f"probe_interval={args.probe_interval} probe_timeout={args.probe_timeout} "
        f"response_s={args.response_s}"
    )
    for r in rows:
        print("  ".join(f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    asyncio.run(main())
