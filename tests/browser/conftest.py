"""Fixtures for browser tests: a live server and a Chromium page at phone size.

The browser is Debian's Chromium (/usr/bin/chromium), driven by Playwright;
Playwright's own browser download is not used. Without that binary, browser
tests are skipped with a clear reason.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Page, sync_playwright
from werkzeug.serving import make_server

from tests.conftest import free_port
from tests.factories import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
#: A small phone screen.
VIEWPORT = {"width": 360, "height": 740}
#: Screenshots go here (git-ignored), so people can look at the pages.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def live_app(make_app: Callable[..., Flask]) -> tuple[Flask, str]:
    """An app on the test database whose BASE_URL is the live server's URL."""
    base_url = f"http://127.0.0.1:{free_port()}"
    return make_app(BASE_URL=base_url), base_url


@pytest.fixture
def live_server(live_app: tuple[Flask, str]) -> Iterator[str]:
    """Serve the app on loopback in a background thread; yield its base URL."""
    app, base_url = live_app
    port = int(base_url.rsplit(":", 1)[1])
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, name="live-server", daemon=True
    )
    thread.start()
    try:
        yield base_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def browser_page() -> Iterator[Page]:
    """A Chromium page with a 360x740 viewport, waiting at most 10 s for what
    it expects; skipped without Chromium."""
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: browser test skipped")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport=VIEWPORT)
            context.set_default_timeout(10_000)
            try:
                yield context.new_page()
            finally:
                context.close()
        finally:
            browser.close()


def sign_in(page: Page, base_url: str, email: str) -> None:
    """Sign in through the login page, as a person would."""
    page.goto(f"{base_url}/login")
    page.locator("#email").fill(email)
    page.locator("#password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


@pytest.fixture
def artifacts() -> Path:
    """The folder for screenshots, created if needed."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
