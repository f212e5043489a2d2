"""Browser fixtures: one headless Debian Chromium per session, a fresh page per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from dash_support import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium at /usr/bin/chromium driven by Playwright's sync API (`make browser` installs it).

    Module scope, not session: while sync Playwright runs, its event loop counts as running in
    this thread, which would break every asyncio test that pytest runs after it.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} missing: run `make browser`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page in its own context (own sessionStorage); page errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
