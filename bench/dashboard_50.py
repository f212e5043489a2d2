"""Dashboard with 50 services: page load time and state-change -> card-colour latency.

Runs a real `corral up` with 50 `[[service]]` entries (``sleep infinity``, 5 groups of 10; no
registry/router), opens the dashboard in headless Chromium (Playwright) and measures:

- load: navigation start -> all 50 cards rendered green (ms, from the page's performance clock);
- event -> DOM: the launcher's event time (``at`` in /api/events) -> the card's data-state change;
- click -> colour: Stop clicked -> card yellow (stopping) / grey (stopped), Start -> green;
- refresh cost: one GET /api/services + patching 50 cards in place (ms), GET /api/services alone
  with a fresh resource sample (calls 1.2 s apart) and with a shared one (back to back; the
  launcher samples at most once per second), and long tasks (>50 ms).

Usage: .venv/bin/python bench/dashboard_50.py [--services 50] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
RECORD = """() => {
  window.__dom = [];
  new MutationObserver((recs) => {
    const t = Date.now();
    for (const r of recs) window.__dom.push([r.target.dataset.service, r.target.dataset.state, t]);
  }).observe(document.getElementById("services"),
             {attributes: true, attributeFilter: ["data-state"], subtree: true});
  window.__longtasks = [];
  new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__longtasks.push(e.duration); })
    .observe({type: "longtask", buffered: true});
}"""


CLICK = "(sel) => { const t = Date.now(); document.querySelector(sel).click(); return t; }"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(n: int, port: int, state_dir: Path) -> str:
    parts = [
        f'[corral]\nstate_dir = "{state_dir}"\n\n[dashboard]\nport = {port}\n',
        "[registry]\nenabled = false\n\n[router]\nenabled = false\n",
    ]
    for i in range(n):
        parts.append(
            f'[[service]]\nname = "svc-{i:02d}"\ngroup = "group-{i // 10}"\n'
            'command = ["sleep", "infinity"]\nstop_grace_s = 2\n'
        )
    return "\n".join(parts)


def follow_events(url: str, out: list[dict[str, Any]]) -> None:
    try:
        with httpx.stream("GET", url + "/api/events", timeout=None) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    out.append(json.loads(line[5:]))
    except httpx.HTTPError:
        pass  # the launcher went away at the end of the run


def stats(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    med = statistics.median(values)
    return f"median {med:.1f} ms, p95 {p95:.1f} ms, max {values[-1]:.1f} ms (n={len(values)})"


def wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    n = a.services

    tmp = Path(tempfile.mkdtemp(prefix="corral-dash50-"))
    port = free_port()
    (tmp / "corral.toml").write_text(config(n, port, tmp / "state"))
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "up.log", "wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "corral", "up", "-c", str(tmp / "corral.toml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        t0 = time.monotonic()
        wait(
            lambda: (
                sum(s["state"] == "healthy" for s in httpx.get(url + "/api/services").json()["services"]) == n
            ),
            120,
            f"{n} services healthy",
        )
        print(f"corral up: {n} services healthy in {time.monotonic() - t0:.1f} s")
        events: list[dict[str, Any]] = []
        threading.Thread(target=follow_events, args=(url, events), daemon=True).start()

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            loads = []
            for _ in range(3):
                page.goto(url + "/")
                page.wait_for_function(
                    f"() => document.querySelectorAll('.card[data-state=healthy]').length === {n}",
                    polling="raf",
                )
                loads.append(page.evaluate("() => performance.now()"))
            dcl = page.evaluate(
                "() => performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
            )
            print(f"load, navigation -> {n} green cards: {stats(loads)}; DOMContentLoaded {dcl:.1f} ms")
            page.evaluate(RECORD)

            def dom_time(name: str, state: str, after: float) -> float:
                hits = [t for s, st, t in page.evaluate("() => window.__dom") if s == name and st == state]
                hits = [t for t in hits if t >= after * 1000 - 5]
                return min(hits) / 1000 if hits else float("nan")

            to_yellow, to_grey, to_green = [], [], []
            for i in range(a.rounds):
                name = f"svc-{(i * 7) % n:02d}"
                sel = f'.card[data-service="{name}"]'
                t_click = page.evaluate(CLICK, f"{sel} [data-action=stop]")
                page.wait_for_selector(f'{sel}[data-state="stopped"]')
                to_yellow.append(dom_time(name, "stopping", t_click / 1000) * 1000 - t_click)
                to_grey.append(dom_time(name, "stopped", t_click / 1000) * 1000 - t_click)
                t_click = page.evaluate(CLICK, f"{sel} [data-action=start]")
                page.wait_for_selector(f'{sel}[data-state="healthy"]')
                to_green.append(dom_time(name, "healthy", t_click / 1000) * 1000 - t_click)
            print(f"click Stop -> card yellow: {stats([v for v in to_yellow if v == v])}")
            print(f"click Stop -> card grey:   {stats(to_grey)}")
            print(f"click Start -> card green: {stats(to_green)}")

            lat = []
            dom = page.evaluate("() => window.__dom")
            for ev in events:
                hits = [
                    t
                    for s, st, t in dom
                    if s == ev["name"] and st == ev["state"] and t >= ev["at"] * 1000 - 5
                ]
                if hits:
                    lat.append(min(hits) - ev["at"] * 1000)
            print(f"event (launcher 'at') -> card colour: {stats(lat)}")

            # refresh() waits for one in flight, so each call below is a whole refresh.
            costs = page.evaluate(
                """async () => { const out = []; await window.corralDashboard.refresh();
                   for (let i = 0; i < 10; i++) { const t = performance.now();
                     await window.corralDashboard.refresh(); out.push(performance.now() - t); }
                   return out; }"""
            )
            # The launcher samples cpu/rss (one process-table pass) at most once a second: calls
            # 1.2 s apart mostly pay for a fresh sample, back-to-back calls share one.
            cold = page.evaluate(
                """async () => { const out = [];
                   for (let i = 0; i < 8; i++) { await new Promise((r) => setTimeout(r, 1200));
                     const t = performance.now();
                     await (await fetch("/api/services")).json(); out.push(performance.now() - t); }
                   return out; }"""
            )
            fetches = page.evaluate(
                """async () => { const out = [];
                   for (let i = 0; i < 10; i++) { const t = performance.now();
                     await (await fetch("/api/services")).json(); out.push(performance.now() - t); }
                   return out; }"""
            )
            print(f"refresh (GET /api/services + patch {n} cards): {stats(costs)}")
            print(f"  GET /api/services, 1.2 s apart (fresh sample): {stats(cold)}")
            print(f"  GET /api/services, back to back (shared sample): {stats(fetches)}")
            time.sleep(10)
            long = page.evaluate("() => window.__longtasks")
            print(
                f"long tasks (>50 ms) since load: {len(long)}" + (f", max {max(long):.0f} ms" if long else "")
            )
            nodes = page.evaluate("() => document.getElementsByTagName('*').length")
            print(f"DOM nodes: {nodes}")
            browser.close()
    finally:
        os.kill(up.pid, signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
        log.close()


if __name__ == "__main__":
    main()
