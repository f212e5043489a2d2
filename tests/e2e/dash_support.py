"""Helpers for the dashboard's browser tests: Chromium through Playwright, a real `corral up`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from support import CorralProcs, free_port, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

# Dot colours of app.css, as getComputedStyle reports them.
COLOURS = {
    "grey": "rgb(154, 163, 173)",
    "yellow": "rgb(224, 168, 0)",
    "green": "rgb(35, 165, 89)",
    "red": "rgb(217, 59, 59)",
}

# Records every data-state a card takes, so a fast restarting -> starting -> healthy is not missed.
# One callback may batch several changes of a card (events parsed from one network read): a
# record's new value is the old value of that card's next record; only the last one's is current.
RECORD_STATES = """() => {
  window.__seen = {};
  new MutationObserver((recs) => {
    recs.forEach((r, i) => {
      const el = r.target;
      const next = recs.slice(i + 1).find((o) => o.target === el);
      (window.__seen[el.dataset.service] ||= []).push(next ? next.oldValue : el.dataset.state);
    });
  }).observe(document.getElementById("services"),
             {attributes: true, attributeFilter: ["data-state"], attributeOldValue: true, subtree: true});
}"""


def ticker_service(name: str = "ticker", period_s: float = 0.2) -> str:
    """A [[service]] that prints a numbered line every ``period_s`` (healthy once spawned)."""
    code = (
        "import itertools,time\n"
        f"for i in itertools.count():\n print('tick', i, flush=True)\n time.sleep({period_s})"
    )
    return f"""
[[service]]
name = "{name}"
command = [{json.dumps(sys.executable)}, "-u", "-c", {json.dumps(code)}]
stop_grace_s = 2
"""


@dataclass
class Launcher:
    """A running `corral up` (foreground, in the test's process list) and its control API."""

    url: str
    token: str | None
    proc: subprocess.Popen[bytes]
    log: Path

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def services(self) -> dict[str, dict[str, Any]]:
        r = httpx.get(self.url + "/api/services", headers=self.headers(), timeout=10)
        r.raise_for_status()
        return {s["name"]: s for s in r.json()["services"]}

    def post(self, path: str) -> httpx.Response:
        return httpx.post(self.url + path, headers=self.headers(), timeout=60)

    def wait_state(self, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
        return wait_until(
            lambda: (s := self.services()[name])["state"] == state and s,
            timeout,
            interval=0.1,
            what=f"{name} {state}",
        )

    def stop(self) -> None:
        """SIGTERM: the launcher stops its children in reverse order; the fixture kills leftovers."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass


def start_launcher(
    procs: CorralProcs, tmp: Path, body: str, token: str | None = None, env: dict[str, str] | None = None
) -> Launcher:
    """Write a corral.toml (own state dir, free dashboard port) with ``body`` and run `corral up`
    (``env``: extra environment, e.g. ``CORRAL_GPU_INVENTORY``)."""
    port = free_port()
    head = f'[corral]\nstate_dir = "{tmp / "state"}"\n\n[dashboard]\nport = {port}\n'
    if token:
        head += f'token = "{token}"\n'
    config = tmp / "corral.toml"
    config.write_text(head + body)
    log = tmp / "up.log"
    proc = procs.start("up", "-c", str(config), log=log, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        # Stop waiting as soon as `corral up` exits (a config error, say): its log tells why.
        served = wait_until(lambda: "exited" if proc.poll() is not None else _serves(url), 60)
    except AssertionError:
        served = "timed out after 60s"
    if served is not True:
        raise AssertionError(f"corral up did not serve {url} ({served}): {log.read_text()[-3000:]}")
    return Launcher(url=url, token=token, proc=proc, log=log)


def _serves(url: str) -> bool:
    return httpx.get(url + "/api/health", timeout=1).status_code == 200


def fleet_config(gpus_per_replica: int = 0) -> str:
    """Registry, router, one mock backend and a ticker, all on free ports."""
    return f"""
[registry]
port = {free_port()}

[router]
port = {free_port()}

[[backend]]
name = "chat"
preset = "mock"
models = ["mock-chat"]
port = {free_port()}
args = ["--ttft-ms", "5", "--itl-ms", "2"]
gpus_per_replica = {gpus_per_replica}
{ticker_service()}"""


GIB = 1 << 30


def gpu(index: int, holders: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    """One GPU of 80 GiB for a ``CORRAL_GPU_INVENTORY`` file; ``holders``: (pid, bytes)."""
    return {
        "index": index,
        "name": f"Test GPU {index}",
        "memory_total": 80 * GIB,
        "utilization_percent": 10 + index,
        "processes": [{"pid": pid, "used_memory": n} for pid, n in holders or []],
    }


def write_inventory(path: Path, gpus: list[dict[str, Any]]) -> None:
    """Atomically (docs/gpu.md): a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"gpus": gpus}))
    os.replace(tmp, path)


def backend_pid(sitter_pid: int) -> int:
    """The backend a sitter runs: its child."""
    import psutil

    kids = wait_until(lambda: psutil.Process(sitter_pid).children(), 30, what="the sitter's backend")
    return int(kids[0].pid)
