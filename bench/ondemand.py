"""On-demand models: cold vs warm first-request latency, wake overhead, load/unload cycles.

    .venv/bin/python bench/ondemand.py [--cycles 10] [--clients 8] [--idle 1.0]

One run, side by side, on the same machine:

1. ``engine start``: ``corral mock`` started directly, time until its ``/health`` answers 200
   (the engine's own start, what any launcher pays);
2. ``cold``: a request through ``corral router`` to an unloaded on-demand model (wake call, the
   sitter's admin start of its parked engine, engine start, probe, registry push, release of the
   held request), median of ``--wakes``; and ``first``: the very first one after ``corral up``
   (the sitter has been up, its engine parked, since ``up``);
3. ``warm``: the next requests, model ready;
4. ``cycles``: ``--clients`` threads send requests in a burst, then all pause past
   ``idle_unload_s`` so the model unloads, ``--cycles`` times: every request must succeed.

Wake overhead = cold - engine start - warm (goal < 300 ms), per wake, with the engine's start as
its sitter measured it for that very wake (``ready_s`` on the sitter's /health: spawn to ready), so
machine noise in the engine's start cancels out. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from openai import OpenAI

PY = sys.executable


def free_port() -> int:
    """A free port whose port+1 is free too (sitters listen on port+1)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = int(s.getsockname()[1])
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
        return p


def wait(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            pass
        time.sleep(0.005)
    raise SystemExit(f"timed out waiting for {what}")


def engine_start() -> float:
    """Seconds from spawning ``corral mock`` to its /health answering 200."""
    port = free_port()
    t0 = time.monotonic()
    p = subprocess.Popen([PY, "-m", "corral", "mock", "--port", str(port), "--models", "m"])
    try:
        wait(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200, 30, "mock")
        return time.monotonic() - t0
    finally:
        p.terminate()
        p.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--idle", type=float, default=1.0, help="idle_unload_s of the model")
    ap.add_argument("--burst-s", type=float, default=1.0)
    ap.add_argument("--wakes", type=int, default=5, help="cold requests after an idle unload")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="corral-ondemand-"))
    registry, router, dash, port = free_port(), free_port(), free_port(), free_port()
    cfg = tmp / "corral.toml"
    cfg.write_text(
        f'[corral]\nstate_dir = "{tmp / "state"}"\n[dashboard]\nport = {dash}\n'
        f"[registry]\nport = {registry}\n[router]\nport = {router}\n"
        f'[[backend]]\nname = "od"\npreset = "mock"\nmodels = ["od"]\nport = {port}\n'
        f'start = "on_demand"\nidle_unload_s = {args.idle}\n'
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    up = subprocess.run(
        [PY, "-m", "corral", "up", "-d", "-c", str(cfg)], env=env, capture_output=True, text=True
    )
    if up.returncode:
        raise SystemExit(up.stdout + up.stderr)
    client = OpenAI(base_url=f"http://127.0.0.1:{router}/v1", api_key="none", max_retries=0, timeout=120)
    msgs = [{"role": "user", "content": "hi"}]

    def ask() -> float:
        t0 = time.monotonic()
        client.chat.completions.create(model="od", messages=msgs, max_tokens=4)  # type: ignore[arg-type]
        return time.monotonic() - t0

    def state() -> str:
        return str(httpx.get(f"http://127.0.0.1:{router}/v1/models/od", timeout=2).json()["corral"]["state"])

    try:
        wait(lambda: state() == "stopped", 30, "the model listed as stopped")

        def ready_s() -> float:
            return float(httpx.get(f"http://127.0.0.1:{port + 1}/health", timeout=2).json()["ready_s"])

        first = ask()
        engine, colds, overheads, warms = [], [], [], [ask() for _ in range(20)]
        for _ in range(args.wakes):  # engine starts and wakes alternate: the same machine load
            wait(lambda: state() == "stopped", 60, "idle unload")
            engine.append(engine_start())
            colds.append(ask())
            overheads.append(colds[-1] - ready_s())
            warms += [ask() for _ in range(20)]
        ok = failed = 0
        lock = threading.Lock()
        errors: list[str] = []

        def client_loop(stop_at: float) -> None:
            nonlocal ok, failed
            while time.monotonic() < stop_at:
                try:
                    ask()
                    with lock:
                        ok += 1
                except Exception as exc:  # any failure counts, with its reason
                    with lock:
                        failed += 1
                        errors.append(f"{type(exc).__name__}: {exc}"[:200])

        unloads = 0
        for _ in range(args.cycles):
            wait(lambda: state() == "stopped", 60, "idle unload")
            unloads += 1
            stop_at = time.monotonic() + args.burst_s
            threads = [threading.Thread(target=client_loop, args=(stop_at,)) for _ in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        eng, cold, warm = statistics.median(engine), statistics.median(colds), statistics.median(warms)
        print("| figure | value |\n|---|---:|")
        n = args.wakes
        print(f"| engine start (`corral mock` to /health 200), median of {n} | {eng * 1000:.0f} ms |")
        print(f"| first request after `corral up` (its sitter parked since `up`) | {first * 1000:.0f} ms |")
        print(f"| cold request after an idle unload, median of {n} | {cold * 1000:.0f} ms |")
        print(f"| warm request, median of {len(warms)} | {warm * 1000:.1f} ms |")
        over = statistics.median(overheads) - warm
        label = "wake overhead = cold - the engine's own start (sitter's `ready_s`) - warm, median"
        print(f"| {label} | {over * 1000:.0f} ms |")
        print(f"| load/unload cycles, {args.clients} clients | {unloads} cycles, {ok} ok, {failed} failed |")
        if errors:
            print("\nfirst errors:\n" + "\n".join(errors[:5]))
        print(
            json.dumps(
                {
                    "engine_s": eng,
                    "engines_s": engine,
                    "overhead_s": over,
                    "first_s": first,
                    "cold_s": cold,
                    "colds_s": colds,
                    "warm_s": warm,
                    "ok": ok,
                    "failed": failed,
                }
            )
        )
    finally:
        subprocess.run(
            [PY, "-m", "corral", "down", "-c", str(cfg)], env=env, capture_output=True, timeout=120
        )
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
