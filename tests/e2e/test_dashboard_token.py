"""With a control token: the page asks once, keeps it in sessionStorage and sends it as a header."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dash_support import COLOURS, Launcher, start_launcher, ticker_service

from support import CorralProcs, wait_until

pytestmark = pytest.mark.browser

TOKEN = "s3cret-control-token"
NO_ROUTER = "[registry]\nenabled = false\n\n[router]\nenabled = false\n"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    procs = CorralProcs()
    launcher = None
    try:
        body = NO_ROUTER + ticker_service("tick-a", 1.0) + ticker_service("tick-b", 1.0)
        launcher = start_launcher(procs, tmp_path_factory.mktemp("token"), body, token=TOKEN)
        wait_until(
            lambda: all(s["state"] == "healthy" for s in launcher.services().values()),
            60,
            interval=0.2,
            what="both tickers healthy",
        )
        yield launcher
    finally:
        if launcher is not None:
            launcher.stop()
        procs.close()


def submit_token(page: Any, token: str) -> None:
    page.wait_for_selector("#token-dialog[open]")
    page.fill("#token-input", token)
    page.click("#token-submit")


def test_token_prompt_then_control_calls_carry_the_header(page: Any, guarded: Launcher) -> None:
    page.goto(guarded.url + "/")
    submit_token(page, "wrong-token")
    page.wait_for_selector("#token-dialog[open] #token-error:not([hidden])")  # refused, asked again
    submit_token(page, TOKEN)
    page.wait_for_selector('.card[data-service="tick-a"][data-state="healthy"]')
    assert page.evaluate("() => sessionStorage.getItem('corral.token')") == TOKEN
    assert page.context.cookies() == []

    sent: list[str | None] = []
    page.on(
        "request", lambda r: sent.append(r.headers.get("authorization")) if "/api/all/" in r.url else None
    )
    page.click("#stop-all")
    for name in ("tick-a", "tick-b"):
        page.wait_for_selector(f'.card[data-service="{name}"][data-state="stopped"]')
    dot = page.locator('.card[data-service="tick-b"] .dot')
    assert dot.evaluate("e => getComputedStyle(e).backgroundColor") == COLOURS["grey"]
    page.click("#start-all")
    for name in ("tick-a", "tick-b"):
        page.wait_for_selector(f'.card[data-service="{name}"][data-state="healthy"]')
    assert sent == [f"Bearer {TOKEN}", f"Bearer {TOKEN}"]

    # Asked once per tab: a reload uses the stored token without a prompt.
    page.reload()
    page.wait_for_selector('.card[data-service="tick-a"][data-state="healthy"]')
    assert page.locator("#token-dialog[open]").count() == 0
