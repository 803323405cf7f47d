"""The admin page in a real browser: headless Chromium loads it (signed in with a
cookie), sees the route's connections, sees the numbers move under load, and closes a
connection with its Close button.

Needs Debian's ``chromium`` and Playwright, as ``tests/test_browser.py`` (a missing
browser skips here and fails under CI). The screenshot is kept in the test's temporary
directory; when ``TRIO_WSROUTES_ARTIFACTS`` names a directory, it is copied there too
(as ``admin-page.png``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from tests._tools import missing_tool
from tests.conftest import live_server
from tests.test_admin import Say, chat_route, chat_server, end_of, join
from tests.test_browser import CHROMIUM_FLAGS
from trio_wsroutes import BoundAddress, Request
from trio_wsroutes._admin import CLOSED_BY_ADMIN
from trio_wsroutes.client import connect

COOKIE = "admin_session"
SESSION = "s3cret-session"


@pytest.fixture
def chromium() -> str:
    """The Chromium executable, or skip (fail in CI) with the reason."""
    if importlib.util.find_spec("playwright") is None:
        missing_tool("playwright is not installed (pip install -e '.[test]' brings it)")
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        missing_tool("chromium is not installed (apt-get install chromium)")
    return found


def by_cookie(request: Request) -> str | None:
    return "ada" if request.cookies.get(COOKIE) == SESSION else None


class Load:
    """Clients that send messages until told to stop (at most ``LIMIT`` each)."""

    CLIENTS = 3
    LIMIT = 400

    def __init__(self, address: BoundAddress) -> None:
        self.address = address
        self.stop = trio.Event()
        self.sent = 0

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for n in range(self.CLIENTS):
                nursery.start_soon(self.client, n)

    async def client(self, n: int) -> None:
        url = f"{self.address.ws_url}/chat/a?user=load-{n}"
        async with connect(url, chat_route()) as client:
            for i in range(self.LIMIT):
                if self.stop.is_set():
                    break
                await client.request(Say(f"load {n} {i}"))
                self.sent += 1
                await trio.sleep(0.02)
            await self.stop.wait()  # then the client leaves


def drive_the_page(
    chromium: str, address: BoundAddress, victim: str, nursery: trio.Nursery, shot: Path
) -> None:
    """The browser side (in a worker thread); asks the Trio side for the load."""
    from playwright.sync_api import expect, sync_playwright

    load = Load(address)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_cookies([{"name": COOKIE, "value": SESSION, "url": address.http_url}])
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{address.http_url}/admin")
            expect(page.locator("#status")).to_have_text("live")
            expect(page.locator("#who")).to_contain_text("signed in as ada")
            route = page.locator('#routes tr[data-key="/chat/:room"]')
            expect(route.locator("td.open")).to_have_text("2")
            expect(page.locator("#t-connections")).to_have_text("2")

            trio.from_thread.run_sync(nursery.start_soon, load.run)
            expect(page.locator("#t-connections")).to_have_text("5")
            expect(route.locator("td.open")).to_have_text("5")
            expect(route.locator("td.in-rate")).not_to_have_text("0", timeout=10_000)
            expect(route.locator("td.deliveries-rate")).not_to_have_text("0")
            expect(page.locator("#t-in")).not_to_have_text("0")
            expect(page.locator('#topics tr[data-key="room:a"] td.subscribers')).to_have_text("5")
            page.screenshot(path=str(shot), full_page=True)
            # A phone's width: every table row a card of labelled cells.
            phone = context.new_page()
            phone.set_viewport_size({"width": 390, "height": 844})
            phone.goto(f"{address.http_url}/admin")
            cell = phone.locator('#routes tr[data-key="/chat/:room"] td.open')
            expect(cell).to_have_text("5")
            assert cell.evaluate("td => getComputedStyle(td, '::before').content") == '"Open"'
            phone.screenshot(path=str(shot.with_name("admin-page-phone.png")), full_page=True)
            phone.close()
            trio.from_thread.run_sync(load.stop.set)
            assert load.sent > 0

            button = page.locator(f'#connections tr[data-key="{victim}"] button')
            button.click()
            expect(button).to_have_text("Confirm?")
            button.click()
            expect(page.locator("#toast")).to_contain_text(f"Closed connection {victim[:8]}")
            expect(page.locator(f'#connections tr[data-key="{victim}"]')).to_have_count(0)
            expect(page.locator("#t-connections")).to_have_text("1")  # the load left too
            assert errors == []  # nothing the page's script, or its policy, refused
        except BaseException:
            if not shot.exists():
                page.screenshot(path=str(shot), full_page=True)
            raise
        finally:
            browser.close()


async def test_the_admin_page_in_a_browser(chromium: str, tmp_path: Path) -> None:
    server = chat_server(authenticate=by_cookie)
    shot = tmp_path / "admin-page.png"
    closed: list[tuple[int, str]] = []
    victim_closed = trio.Event()

    async def watch(client: Any) -> None:
        end = await end_of(client)
        closed.append((end.code, end.reason))
        victim_closed.set()

    with trio.fail_after(60):
        async with live_server(server, "native") as address, AsyncExitStack() as stack:
            victim, victim_id = await join(stack, address, "a", "mallory")
            await join(stack, address, "a", "bob")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, victim)
                await trio.to_thread.run_sync(
                    drive_the_page, chromium, address, victim_id, nursery, shot
                )
                await victim_closed.wait()
                nursery.cancel_scope.cancel()  # the load's clients, done
    assert closed == [(1008, CLOSED_BY_ADMIN)]
    keep_screenshots(shot, shot.with_name("admin-page-phone.png"))


def keep_screenshots(*shots: Path) -> None:
    """Print where the screenshots are; copy them to ``TRIO_WSROUTES_ARTIFACTS``, if that
    names a directory."""
    for shot in shots:
        print(f"admin page screenshot: {shot}")
    artifacts = os.environ.get("TRIO_WSROUTES_ARTIFACTS")
    if artifacts and Path(artifacts).is_dir():
        for shot in shots:
            copy = Path(artifacts) / shot.name
            shutil.copyfile(shot, copy)
            print(f"admin page screenshot copied to {copy}")
