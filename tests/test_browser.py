"""End to end in a real browser: headless Chromium pages chat through the example, whose
page uses the generated client (``websocket-client.js``), and one survives a restart of
the server.

Needs Debian's ``chromium`` (``.ci/run`` installs it) and Playwright for Python, which
drives it through ``executable_path`` (no browser download). Skipped with the reason on a
developer machine without Chromium; under CI (``CI=true``) a missing browser fails the
test (``tests/_tools.py``).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from examples.chat.app import ChatOut, server
from tests._tools import missing_tool
from tests.conftest import live_server
from trio_wsroutes import BoundAddress

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


def survive_a_restart(
    chromium: str, base_url: str, room: str, restart: Callable[[], None], screenshots: Path
) -> None:
    """The browser side of the restart test (in a worker thread); ``restart()`` stops the
    server, publishes in the room while it is down, and starts it again."""
    from playwright.sync_api import expect, sync_playwright

    digits = re.compile(r"^\d+$")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        try:
            page.goto(f"{base_url}/?room={room}")
            status, log, latency = (
                page.locator("#status"),
                page.locator("#log"),
                page.locator("#latency"),
            )
            expect(status).to_have_text("connected")
            expect(latency).to_have_text(digits)  # the typed reply to the first ping
            page.fill("#name", "ada")
            page.click("#name-form button")
            expect(log).to_contain_text("You are now ada")  # the request's ack
            page.fill("#text", "before the restart")
            page.press("#text", "Enter")
            expect(log).to_contain_text("ada: before the restart")

            restart()

            # The page reconnected by itself, resumed the room where it was, got what
            # was published while it was away, and says it lost nothing.
            expect(log).to_contain_text("Reconnected", timeout=30_000)
            expect(status).to_have_text("connected")
            expect(log).to_contain_text("bot: while you were away")
            expect(log).to_contain_text(f"Caught up with #{room}")
            expect(log).not_to_contain_text("were lost")
            # A request after the restart gets its typed reply (the pong's timestamp).
            expect(latency).to_have_text(digits)
            page.fill("#text", "after the restart")
            page.press("#text", "Enter")
            expect(log).to_contain_text("ada: after the restart")  # the name was re-sent
            expect(page.locator("#log .error")).to_have_count(0)
        except BaseException:
            page.screenshot(path=str(screenshots / "restart.png"))
            raise
        finally:
            browser.close()


class Restartable:
    """``server`` under hypercorn, stopped and started again on the same port."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.stop = trio.Event()
        self.stopped = trio.Event()

    async def start(self, port: int = 0) -> BoundAddress:
        self.stop, self.stopped = trio.Event(), trio.Event()
        stop, stopped = self.stop, self.stopped

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await server.serve(
                    "127.0.0.1", port, shutdown_trigger=stop.wait, task_status=task_status
                )
            finally:
                stopped.set()

        addresses: list[BoundAddress] = await self.nursery.start(run)
        return addresses[0]

    async def shut_down(self) -> None:
        self.stop.set()
        await self.stopped.wait()


async def test_the_page_survives_a_server_restart_and_recovers_what_it_missed(
    chromium: str, tmp_path: Path
) -> None:
    room = f"restart-{uuid.uuid4().hex[:6]}"
    async with trio.open_nursery() as nursery:
        serving = Restartable(nursery)
        address = await serving.start()

        async def restart() -> None:
            await serving.shut_down()  # the page's connection closes with 1001
            # The room's history lives in the server's broker, not in hypercorn.
            await server.publish(
                f"room:{room}", ChatOut(user="bot", text="while you were away", room=room)
            )
            await serving.start(address.port)

        try:
            with trio.fail_after(90):
                await trio.to_thread.run_sync(
                    survive_a_restart,
                    chromium,
                    address.http_url,
                    room,
                    lambda: trio.from_thread.run(restart),
                    tmp_path,
                )
        finally:
            await serving.shut_down()
