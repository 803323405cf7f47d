"""End to end in a real browser: two headless Chromium pages chat through the example.

Needs Debian's ``chromium`` (``.ci/run`` installs it) and Playwright for Python, which
drives it through ``executable_path`` (no browser download). Skipped with the reason on a
developer machine without Chromium; under CI (``CI=true``) a missing browser fails the
test (``tests/_tools.py``).
"""

from __future__ import annotations

import importlib.util
import shutil
import uuid
from pathlib import Path

import pytest
import trio

from examples.chat.app import server
from tests._tools import missing_tool
from tests.conftest import live_server

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium() -> str:
    """The Chromium executable, or skip (fail in CI) with the reason."""
    if importlib.util.find_spec("playwright") is None:
        missing_tool("playwright is not installed (pip install -e '.[test]' brings it)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing_tool("chromium is not installed (apt-get install chromium)")
    return chromium


def chat_in_two_pages(chromium: str, base_url: str, screenshots: Path) -> None:
    """The browser side, with Playwright's synchronous API (run in a worker thread)."""
    from playwright.sync_api import expect, sync_playwright

    room = f"e2e-{uuid.uuid4().hex[:6]}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        ada = browser.new_page()
        grace = browser.new_page()
        try:
            for page, name in ((ada, "ada"), (grace, "grace")):
                page.goto(f"{base_url}/?room={room}")
                expect(page.locator("#status")).to_have_text("connected")
                page.fill("#name", name)
                page.click("#name-form button")

            ada.fill("#text", "hello from ada")
            ada.press("#text", "Enter")
            for page in (ada, grace):
                expect(page.locator("#log")).to_contain_text("ada: hello from ada")

            grace.fill("#text", "hi ada")
            grace.press("#text", "Enter")
            expect(ada.locator("#log")).to_contain_text("grace: hi ada")

            # An empty message is refused by the server's validation, rendered by the page.
            ada.fill("#text", "")
            ada.press("#text", "Enter")
            expect(ada.locator("#log .error")).to_contain_text("VALIDATION_ERROR")
            expect(ada.locator("#log .error")).to_contain_text("$.data.text")

            grace.close()
            expect(ada.locator("#log")).to_contain_text("grace left")
        except BaseException:
            for page, name in ((ada, "ada"), (grace, "grace")):
                if not page.is_closed():
                    page.screenshot(path=str(screenshots / f"{name}.png"))
            raise
        finally:
            browser.close()


async def test_two_browsers_chat_see_errors_and_see_each_other_leave(
    chromium: str, tmp_path: Path
) -> None:
    async with live_server(server, "hypercorn") as address:
        with trio.fail_after(60):
            await trio.to_thread.run_sync(chat_in_two_pages, chromium, address.http_url, tmp_path)
