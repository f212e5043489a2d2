"""The dashboard's router panel shows on-demand models with their live state: listed (grey,
"stopped") before anything runs, green "ready" once a request woke the model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from dash_support import COLOURS, Launcher, start_launcher

from support import CorralProcs, free_port, wait_until

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def od_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    tmp = tmp_path_factory.mktemp("dash-od")
    procs = CorralProcs()
    launcher = None
    body = (
        f"[registry]\nport = {free_port()}\n[router]\nport = {free_port()}\n"
        f'[[backend]]\nname = "od"\npreset = "mock"\nmodels = ["od-model"]\nport = {free_port()}\n'
        'start = "on_demand"\n'
    )
    try:
        launcher = start_launcher(procs, tmp, body)
        wait_until(
            lambda: all(s["state"] == "healthy" for n, s in launcher.services().items() if n != "od-0"),
            120,
            interval=0.2,
            what="registry and router healthy",
        )
        yield launcher
    finally:
        if launcher is not None:
            launcher.stop()
        procs.close()


def _row(page: Any) -> Any:
    return page.locator('#models tr[data-model="od-model"]').first


def test_on_demand_model_listed_stopped_then_ready_after_a_request(page: Any, od_fleet: Launcher) -> None:
    page.goto(od_fleet.url + "/")
    page.wait_for_selector('#models tr[data-model="od-model"][data-state="stopped"]', timeout=60_000)
    row = _row(page)
    assert row.locator("td").first.inner_text() == "od-model (on demand: stopped)"
    assert row.locator("td").nth(2).inner_text() == "stopped"
    router = od_fleet.services()["router"]["url"]
    with openai.OpenAI(base_url=router + "/v1", api_key="x", max_retries=0, timeout=120) as client:
        client.chat.completions.create(
            model="od-model", messages=[{"role": "user", "content": "wake up"}], max_tokens=4
        )
    page.wait_for_selector('#models tr[data-model="od-model"][data-state="ready"]', timeout=60_000)
    colour = _row(page).locator("td").first.evaluate("e => getComputedStyle(e).color")
    assert colour == COLOURS["green"]
