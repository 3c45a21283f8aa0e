"""Headless Chromium for the tests of what runs in a visitor's browser (Debian's chromium, Playwright)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    sync_api = pytest.importorskip("playwright.sync_api")
    with pytest.MonkeyPatch.context() as patch:
        # Playwright's sync API keeps an event loop running in this thread, which makes Django refuse
        # the (plain, blocking) ORM calls of the tests and of the database teardown between them.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()


def open_page(browser, *, init_script: str | None = None, **context_options):
    """A page in a fresh context that tracks its requests in flight (for `close_page`)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB", **context_options)
    if init_script:
        context.add_init_script(init_script)
    in_flight: set = set()
    context.on("request", lambda request: in_flight.add(request))
    context.on("requestfinished", lambda request: in_flight.discard(request))
    context.on("requestfailed", lambda request: in_flight.discard(request))
    page = context.new_page()
    page.in_flight = in_flight
    return page


def close_page(page) -> None:
    # Closing hides the page, and the snippet would beacon what it still holds: cut the page off and
    # let the server finish what it already received before this test's database is flushed.
    if not page.is_closed():
        page.evaluate("() => { navigator.sendBeacon = () => true; window.fetch = () => new Promise(() => {}); }")
    deadline = time.monotonic() + 5
    while page.in_flight and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    page.context.close()


def eventually(page, probe: Callable[[], T], *, timeout: float = 10.0, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy. Waits through the page, so Playwright keeps
    serving the browser (routes, events) meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        page.wait_for_timeout(100)
