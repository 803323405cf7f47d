"""The "Presence and users" guide's snippets, run against a real server (hypercorn)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
from presence import LARGE, Seat, room, seat, server, viewers, watch

from trio_wsroutes import BoundAddress, PresenceStats, WebSocketServer
from trio_wsroutes.client import connect


@pytest.fixture
def ws_server() -> WebSocketServer:
    return server


async def wait_until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not predicate():  # noqa: ASYNC110 - polls what another task fills
            await trio.sleep(0.01)


async def test_a_watcher_sees_each_user_come_and_go_once(ws_live_server: BoundAddress) -> None:
    url = f"{ws_live_server.ws_url}/rooms/lobby"
    seen: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, url, "t-ada", seen)
        await wait_until(lambda: seen == ["here: Ada"])
        # Grace on two devices: one join, and one leave once both are gone.
        async with connect(url, room, token="t-grace"), connect(url, room, token="t-grace"):
            await wait_until(lambda: len(seen) == 2)
            stats = await server.presence_stats("room:lobby")
            assert stats == PresenceStats(clients=3, users=2)
            entries = await server.presence("room:lobby")
            assert sorted(str(e.user_id) for e in entries) == ["u1", "u2", "u2"]
            assert {e.info_as(Seat) for e in entries} == {Seat("Ada", "web"), Seat("Grace", "web")}
        await wait_until(lambda: len(seen) == 3)
        nursery.cancel_scope.cancel()
    assert seen == ["here: Ada", "+Grace", "-Grace"]


async def test_a_large_topic_is_counted(ws_live_server: BoundAddress) -> None:
    assert LARGE["room:*"].info is seat
    big = WebSocketServer([], presence=LARGE)
    assert await viewers(big, "launch") == 0
