"""The dashboard in a real Chromium against a real `corral up` (registry, router, mock, services)."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from dash_support import (
    COLOURS,
    GIB,
    RECORD_STATES,
    Launcher,
    backend_pid,
    fleet_config,
    gpu,
    start_launcher,
    write_inventory,
)

from support import CorralProcs, wait_until

pytestmark = pytest.mark.browser

NONE = "\u2013"  # the dash the page shows for "no value"
# Card `n` is healthy with a PID other than `p`: a number, not the dash of "no process" (between the
# old process's exit and the new one's start the card may briefly show no PID).
HEALTHY_WITH_NEW_PID = """([n, p]) => {
  const c = document.querySelector(`.card[data-service="${n}"]`);
  const pid = c.querySelector(".pid").textContent;
  return c.dataset.state === "healthy" && /^[0-9]+$/.test(pid) && pid !== p;
}"""
# The picture in the docs is rewritten only on request (CORRAL_REFRESH_DOCS=1, e.g.
# `CORRAL_REFRESH_DOCS=1 make test`): a plain test run leaves the git tree as it was.
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"
BROKEN = f"""
[[service]]
name = "broken"
command = [{json.dumps(sys.executable)}, "-c", "import sys; print('disk on fire', flush=True); sys.exit(3)"]
restart = {{ max_restarts = 0 }}
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    # Two GPUs from an inventory file (docs/gpu.md); the backend is placed on GPU 0.
    tmp = tmp_path_factory.mktemp("dash")
    write_inventory(tmp / "gpus.json", [gpu(0), gpu(1)])
    procs = CorralProcs()
    launcher = None
    try:
        env = {"CORRAL_GPU_INVENTORY": str(tmp / "gpus.json")}
        launcher = start_launcher(procs, tmp, fleet_config(gpus_per_replica=1) + BROKEN, env=env)
        want = {"broken": "failed"}
        wait_until(
            lambda: all(s["state"] == want.get(n, "healthy") for n, s in launcher.services().items()),
            120,
            interval=0.2,
            what="every service healthy (broken failed)",
        )
        yield launcher
    finally:
        if launcher is not None:
            launcher.stop()
        procs.close()


def open_dashboard(page: Any, launcher: Launcher) -> None:
    page.goto(launcher.url + "/")
    page.wait_for_selector(".card")
    # The event stream connects after the first refresh: a change before that would be missed.
    page.wait_for_selector('#conn[data-conn="live"]')
    page.evaluate(RECORD_STATES)


def card(page: Any, name: str) -> Any:
    return page.locator(f'.card[data-service="{name}"]')


def expect_state(page: Any, name: str, state: str, timeout_ms: int = 60_000) -> None:
    page.wait_for_selector(f'.card[data-service="{name}"][data-state="{state}"]', timeout=timeout_ms)


def dot_colour(page: Any, name: str) -> str:
    return str(card(page, name).locator(".dot").evaluate("e => getComputedStyle(e).backgroundColor"))


def seen(page: Any, name: str) -> list[str]:
    return list(page.evaluate("n => (window.__seen[n] || []).slice()", name))


def sitter_name(launcher: Launcher) -> str:
    return next(n for n, s in launcher.services().items() if s["kind"] == "sitter")


def test_cards_show_every_service_grouped_and_coloured(page: Any, fleet: Launcher) -> None:
    services = fleet.services()
    open_dashboard(page, fleet)
    for name, svc in services.items():
        if name == "broken":
            continue
        expect_state(page, name, "healthy")
        assert dot_colour(page, name) == COLOURS["green"]
        assert card(page, name).locator(".pid").inner_text() == str(svc["pid"])
    assert card(page, "registry").locator("xpath=ancestor::section").get_attribute("id") == "kind-control"
    assert card(page, "router").locator("xpath=ancestor::section").get_attribute("id") == "kind-control"
    backend = sitter_name(fleet)
    assert card(page, backend).locator("xpath=ancestor::section").get_attribute("id") == "kind-backends"
    assert card(page, "ticker").locator("xpath=ancestor::section").get_attribute("id") == "kind-other"
    assert "mock-chat" in card(page, backend).locator(".models").inner_text()
    assert card(page, "router").locator(".ports a").count() >= 1
    # Two resource refreshes later the sparklines have points and cpu/rss show numbers.
    page.wait_for_function(
        """n => document.querySelector(`.card[data-service="${n}"] .spark-rss polyline`)
                 .getAttribute("points").split(" ").length >= 2""",
        arg="ticker",
    )
    assert "MB" in card(page, "ticker").locator(".rss").inner_text()
    assert "%" in card(page, "ticker").locator(".cpu").inner_text()
    assert page.locator("#summary").inner_text().startswith(f"{len(services)} services")


def test_failed_service_shows_reason_and_last_log_lines(page: Any, fleet: Launcher) -> None:
    open_dashboard(page, fleet)
    expect_state(page, "broken", "failed")
    assert dot_colour(page, "broken") == COLOURS["red"]
    failure = card(page, "broken").locator(".failure")
    failure.wait_for(state="visible")
    assert "crash loop" in failure.locator(".reason").inner_text()
    page.wait_for_function(
        """() => document.querySelector('.card[data-service="broken"] .lastlog')
                 .textContent.includes("disk on fire")"""
    )


def test_router_panel_lists_models_charts_and_screenshot(page: Any, fleet: Launcher, tmp_path: Path) -> None:
    refresh = os.environ.get("CORRAL_REFRESH_DOCS") == "1"
    screenshot = DOCS_SCREENSHOT if refresh else tmp_path / "dashboard.png"
    router = fleet.services()["router"]["url"]
    with openai.OpenAI(base_url=router + "/v1", api_key="x", max_retries=0) as client:
        wait_until(lambda: "mock-chat" in httpx.get(router + "/v1/models").text, 30, what="router routes")
        for _ in range(5):
            client.chat.completions.create(
                model="mock-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=8
            )
    open_dashboard(page, fleet)
    row = page.locator('#models tr[data-model="mock-chat"]').first
    row.wait_for()
    assert row.locator("td").nth(2).inner_text() == "healthy"
    assert row.locator("td").nth(3).inner_text() == "closed"
    assert row.locator("td").nth(5).inner_text() == "\u2013"  # not out: no reason shown (a dash)
    has_stats = httpx.get(fleet.url + "/api/router/stats", headers=fleet.headers()).status_code == 200
    if has_stats:
        with openai.OpenAI(base_url=router + "/v1", api_key="x", max_retries=0) as client:
            for _ in range(10):
                client.chat.completions.create(
                    model="mock-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=8
                )
        page.wait_for_function(
            "() => document.querySelector('#chart-rps polyline')?.getAttribute('points').includes(' ')"
        )
    card(page, "ticker").locator('[data-action="logs"]').click()
    page.wait_for_function("() => document.querySelectorAll('#log-lines span').length >= 5")
    # For the picture: the backend holds 4 GiB of GPU 0, a foreign process 2 GiB of GPU 1. The
    # inventory is emptied again afterwards, so a later backend restart has nothing to wait for.
    inventory = fleet.log.parent / "gpus.json"  # beside up.log: the fixture's tmp dir
    backend = sitter_name(fleet)
    mock = fleet.services()[backend]["pid"]  # a backend's card shows the backend's own PID
    assert mock == backend_pid(fleet.services()[backend]["sitter"]["pid"])
    try:
        write_inventory(inventory, [gpu(0, [(mock, 4 * GIB)]), gpu(1, [(os.getpid(), 2 * GIB)])])
        page.locator(f'#gpus .holder[data-service="{backend}"]').wait_for()
        page.locator("#gpus .holder.foreign").wait_for()
        page.wait_for_function(
            "n => document.querySelector(`.card[data-service='${n}'] .gpus`)?.textContent.includes('GiB')",
            arg=backend,
        )
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(screenshot), full_page=True)
    finally:
        write_inventory(inventory, [gpu(0), gpu(1)])
    assert screenshot.stat().st_size > 10_000


def test_stop_start_restart_buttons(page: Any, fleet: Launcher) -> None:
    open_dashboard(page, fleet)
    ticker = card(page, "ticker")
    expect_state(page, "ticker", "healthy")
    old_pid = ticker.locator(".pid").inner_text()

    ticker.locator('[data-action="stop"]').click()
    expect_state(page, "ticker", "stopped")
    assert dot_colour(page, "ticker") == COLOURS["grey"]
    assert ticker.locator(".pid").inner_text() == NONE
    assert fleet.services()["ticker"]["state"] == "stopped"

    ticker.locator('[data-action="start"]').click()
    expect_state(page, "ticker", "healthy")
    assert dot_colour(page, "ticker") == COLOURS["green"]
    started_pid = ticker.locator(".pid").inner_text()
    assert started_pid not in (old_pid, NONE)

    page.evaluate("() => { window.__seen = {}; }")
    ticker.locator('[data-action="restart"]').click()
    page.wait_for_function(
        HEALTHY_WITH_NEW_PID,
        arg=["ticker", started_pid],
    )
    states = seen(page, "ticker")
    assert set(states) & {"stopping", "restarting", "starting"}, states  # went yellow on the way
    assert states[-1] == "healthy"


def test_log_panel_follows_filters_and_pauses(page: Any, fleet: Launcher) -> None:
    open_dashboard(page, fleet)
    card(page, "ticker").locator('[data-action="logs"]').click()
    assert page.locator("#log-name").inner_text() == "ticker"
    count = "() => document.querySelectorAll('#log-lines span').length"
    page.wait_for_function(f"() => ({count})() >= 3")
    n = page.evaluate(count)
    page.wait_for_function(f"n => ({count})() > n + 2", arg=n)  # new lines keep arriving
    last = page.locator("#log-lines span").last.inner_text()
    assert last.startswith("tick ")

    page.fill("#log-filter", last.strip())
    visible = page.eval_on_selector_all(
        "#log-lines span", "els => els.filter(e => e.className !== 'hide').map(e => e.textContent)"
    )
    assert visible and all(last.strip() in v for v in visible), visible
    assert len(visible) < page.evaluate(count)
    page.fill("#log-filter", "")

    page.click("#log-pause")
    frozen = page.evaluate(count)
    held = (
        "() => Number((document.querySelector('#log-status').textContent.match(/(\\d+) new/) || [0, 0])[1])"
    )
    page.wait_for_function(f"() => ({held})() >= 3")
    assert page.evaluate(count) == frozen  # nothing appended while paused
    page.click("#log-pause")
    page.wait_for_function(f"n => ({count})() >= n + 3", arg=frozen)  # held lines flushed


def test_sigkilled_backend_leaves_green_and_comes_back(page: Any, fleet: Launcher) -> None:
    name = sitter_name(fleet)
    open_dashboard(page, fleet)
    expect_state(page, name, "healthy")
    pid = int(card(page, name).locator(".pid").inner_text())
    page.evaluate("() => { window.__seen = {}; }")
    os.kill(pid, signal.SIGKILL)
    page.wait_for_function(
        HEALTHY_WITH_NEW_PID,
        arg=[name, str(pid)],
        timeout=90_000,
    )
    states = seen(page, name)
    assert any(s != "healthy" for s in states), states
    page.wait_for_function(
        """n => Number(document.querySelector(`.card[data-service="${n}"] .restarts`).textContent) >= 1""",
        arg=name,
    )


def test_rolling_restart_button_asks_before_a_gap_then_restarts(page: Any, fleet: Launcher) -> None:
    # The one chat replica holds a GPU, so no surge copy: the page asks before leaving a gap.
    open_dashboard(page, fleet)
    name = sitter_name(fleet)
    expect_state(page, name, "healthy")
    old_pid = card(page, name).locator(".pid").inner_text()
    asked: list[str] = []

    def accept(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    group = card(page, name).locator("xpath=ancestor::div[contains(@class, 'group')]")
    group.locator('[data-action="rolling"]').click()
    page.wait_for_function(HEALTHY_WITH_NEW_PID, arg=[name, old_pid], timeout=120_000)
    assert asked and "--force" in asked[0] and "only replica" in asked[0], asked
