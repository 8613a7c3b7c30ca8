"""/docs works with no internet: a real browser renders every operation while every request
that would leave 127.0.0.1 is refused. Chromium comes from Debian (.ci/run installs it); the
recipe is in ../shared/TESTING.md."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Route, sync_playwright
from serving_harness import LiveServer

CHROMIUM = Path("/usr/lib/chromium/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium; missing, the test skips here and fails in CI."""
    if not CHROMIUM.exists():
        reason = "Chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


def test_swagger_ui_renders_every_operation_offline(
    live_server: LiveServer, chromium: Path
) -> None:
    outside: list[str] = []

    def only_loopback(route: Route) -> None:
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_loopback)
            failed: list[str] = []
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.goto(f"{live_server.url}/docs", wait_until="networkidle", timeout=60_000)
            page.wait_for_selector(".opblock", timeout=60_000)
            operations = page.locator(".opblock").count()
            title = page.locator(".info .title").inner_text()
        finally:
            browser.close()
    assert outside == []  # nothing was fetched from a CDN
    assert failed == []
    assert operations > 20  # one block per documented operation
    assert "mlserve" in title
