"""How fast is `corral mock`? Requests/s (non-streaming) and streamed chunks/s, workers 1 and 2.

    .venv/bin/python bench/mock_throughput.py [--duration 5] [--conns 64] [--tokens 64]

Starts `corral mock --itl-ms 0` as a real process, drives it from a separate load-generator
process (aiohttp client on uvloop, many keep-alive connections), and reads the mock's CPU time
(utime + stime of its process tree) over the measured window, so the table shows both what
this machine sustained and what each request or chunk costs the mock. On a small machine the
load generator shares the cores and is usually the limit: the CPU columns are the portable
numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu(pid: int) -> float:
    """utime + stime of a process and its children, in seconds."""
    p = psutil.Process(pid)
    total = 0.0
    for proc in [p, *p.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


async def _load(
    url: str, conns: int, duration: float, warmup: float, stream: bool, tokens: int
) -> dict[str, float]:
    import aiohttp

    if stream:
        body = {"model": "bench", "prompt": "x", "max_tokens": tokens, "stream": True, "ignore_eos": True}
    else:
        body = {"model": "bench", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}
    path = "/v1/completions" if stream else "/v1/chat/completions"
    payload = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    counts = {"requests": 0, "chunks": 0, "errors": 0}
    measuring = False
    stop = False

    async def worker(session: aiohttp.ClientSession) -> None:
        while not stop:
            try:
                async with session.post(url + path, data=payload, headers=headers) as r:
                    if r.status != 200:
                        counts["errors"] += 1
                    if stream:
                        n, tail = 0, b""
                        async for data in r.content.iter_any():
                            n += (tail + data).count(b"data: ")
                            tail = data[-5:]
                        if measuring:
                            counts["chunks"] += n
                    else:
                        await r.read()
                if measuring:
                    counts["requests"] += 1
            except aiohttp.ClientError:
                counts["errors"] += 1

    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(worker(session)) for _ in range(conns)]
        await asyncio.sleep(warmup)
        measuring = True
        print("start", flush=True)  # the parent starts its CPU clock on this line
        t0 = time.perf_counter()
        await asyncio.sleep(duration)
        measuring = False
        elapsed = time.perf_counter() - t0
        stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    return {**counts, "seconds": elapsed}


def _run_load_child(args: argparse.Namespace) -> None:
    import uvloop

    result = uvloop.run(_load(args.load, args.conns, args.duration, args.warmup, args.stream, args.tokens))
    print(json.dumps(result), flush=True)


def _measure(workers: int, stream: bool, args: argparse.Namespace) -> dict[str, float]:
    port = _free_port()
    mock = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corral",
            "mock",
            "--port",
            str(port),
            "--models",
            "bench",
            "--itl-ms",
            "0",
            "--workers",
            str(workers),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mock did not start") from None
                time.sleep(0.05)
        if workers > 1:
            while len(psutil.Process(mock.pid).children()) < workers:
                time.sleep(0.05)
        load_argv = [
            sys.executable,
            __file__,
            "--load",
            f"http://127.0.0.1:{port}",
            "--conns",
            str(args.conns),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            "--tokens",
            str(args.tokens),
        ]
        load = subprocess.Popen(
            [*load_argv, *(["--stream"] if stream else [])], stdout=subprocess.PIPE, text=True
        )
        assert load.stdout is not None
        assert load.stdout.readline().strip() == "start"
        cpu0 = _cpu(mock.pid)
        result = json.loads(load.stdout.readline())
        cpu1 = _cpu(mock.pid)
        load.wait(timeout=60)
        result["mock_cpu_s"] = cpu1 - cpu0
        return result
    finally:
        os.killpg(mock.pid, 15)
        mock.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--conns", type=int, default=64, help="concurrent connections")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per streamed request")
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        _run_load_child(args)
        return
    print(f"corral mock: {os.cpu_count()} CPUs, {args.conns} connections, {args.duration:g} s per run")
    head = ("workers", "req/s", "mock CPU/req", "chunks/s", "mock CPU/chunk", "errors")
    print("{:>7} {:>9} {:>13} {:>10} {:>15} {:>6}".format(*head))
    for workers in (1, 2):
        r = _measure(workers, False, args)
        s = _measure(workers, True, args)
        rps = r["requests"] / r["seconds"]
        cps = s["chunks"] / s["seconds"]
        cpu_req = 1e6 * r["mock_cpu_s"] / max(r["requests"], 1)
        cpu_chunk = 1e6 * s["mock_cpu_s"] / max(s["chunks"], 1)
        print(
            f"{workers:>7} {rps:>9.0f} {cpu_req:>10.1f} us {cps:>10.0f} {cpu_chunk:>12.2f} us "
            f"{int(r['errors'] + s['errors']):>6}"
        )


if __name__ == "__main__":
    main()
