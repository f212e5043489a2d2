"""A backend that fails for good turns its card red, with the reason and the engine's last lines,
within about a second of its sitter knowing: the card shows the backend, not its sitter."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from dash_support import COLOURS, Launcher, start_launcher

from support import CorralProcs, free_port, wait_until

pytestmark = pytest.mark.browser

NO_ROUTER = "[registry]\nenabled = false\n\n[router]\nenabled = false\n"
CRASH = "import sys; print('ValueError: Model path does not exist', flush=True); sys.exit(1)"
# Fails when its sitter gives up after max_failed_starts (5) starts that never became ready.
ENGINE = f"""
[[backend]]
name = "llama"
command = [{json.dumps(sys.executable)}, "-c", {json.dumps(CRASH)}]
port = {{port}}
restart_delay = 0.05
auto_start = false
"""
# Card "llama-0" turned failed: when (Date.now(), ms), recorded in the page.
RECORD_FAILED = """() => {
  window.__failedAt = null;
  const card = document.querySelector('.card[data-service="llama-0"]');
  new MutationObserver(() => {
    if (card.dataset.state === "failed" && window.__failedAt === null) window.__failedAt = Date.now();
  }).observe(card, {attributes: true, attributeFilter: ["data-state"]});
}"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    procs = CorralProcs()
    launcher = None
    try:
        body = NO_ROUTER + ENGINE.replace("{port}", str(free_port()))
        launcher = start_launcher(procs, tmp_path_factory.mktemp("engine"), body)
        yield launcher
    finally:
        if launcher is not None:
            launcher.stop()
        procs.close()


def test_failed_backend_is_red_with_reason_and_last_lines_within_a_second(
    page: Any, engine: Launcher
) -> None:
    page.goto(engine.url + "/")
    page.wait_for_selector('.card[data-service="llama-0"][data-state="stopped"]')
    page.wait_for_selector('#conn[data-conn="live"]')
    page.evaluate(RECORD_FAILED)

    sitter = f"http://127.0.0.1:{engine.services()['llama-0']['ports']['sitter']}/health"
    assert engine.post("/api/services/llama-0/start").status_code == 200

    def sitter_says_failed() -> float | None:
        body = httpx.get(sitter, timeout=2).json()
        return time.time() if body.get("backend") == "failed" else None

    known_at = wait_until(sitter_says_failed, 90, interval=0.02, what="the sitter to give up")
    page.wait_for_function("() => window.__failedAt !== null", timeout=10_000)
    late_s = page.evaluate("() => window.__failedAt") / 1000 - known_at
    assert late_s < 1.0, f"the card turned red {late_s:.2f}s after the sitter knew"

    card = page.locator('.card[data-service="llama-0"]')
    assert card.locator(".dot").evaluate("e => getComputedStyle(e).backgroundColor") == COLOURS["red"]
    reason = card.locator(".failure .reason").inner_text()
    assert "crash loop" in reason and "never became ready" in reason
    page.wait_for_function(
        """() => document.querySelector('.card[data-service="llama-0"] .lastlog')
                 .textContent.includes("Model path does not exist")"""
    )
    assert card.locator(".restarts").inner_text() == "4"  # the backend's restarts, not the sitter's

    # Every port shows in full: none cut off with an ellipsis.
    ports = engine.services()["llama-0"]["ports"]
    shown = card.locator(".ports")
    assert all(str(p) in shown.inner_text() for p in ports.values()), shown.inner_text()
    assert shown.evaluate("e => e.scrollWidth <= e.clientWidth"), shown.inner_text()
