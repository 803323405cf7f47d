"""The "History and recovery" guide's snippets, run against a real server (hypercorn)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
from history import Chat, ChatOut, follow, policy, room, server

from trio_wsroutes import BoundAddress, History, Position, WebSocketServer
from trio_wsroutes.client import connect


@pytest.fixture
def ws_server() -> WebSocketServer:
    return server


async def wait_until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not predicate():  # noqa: ASYNC110 - polls what another task fills
            await trio.sleep(0.01)


def texts(shown: list[ChatOut]) -> list[str]:
    return [m.text for m in shown]


async def test_a_new_client_gets_a_backlog_then_live_messages(
    ws_live_server: BoundAddress,
) -> None:
    url = f"{ws_live_server.ws_url}/rooms/new"
    for n in range(3):
        await server.publish("room:new", ChatOut("bot", f"m{n}"))
    saved: dict[str, Position] = {}
    shown: list[ChatOut] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow, url, saved, shown)
        await wait_until(lambda: len(shown) == 3)  # the backlog
        async with connect(url, room) as writer:
            await writer.send(Chat("hello"))
            await wait_until(lambda: len(shown) == 4)
        nursery.cancel_scope.cancel()
    assert texts(shown) == ["m0", "m1", "m2", "hello"]
    assert saved["room:new"].offset == 4


async def test_a_client_resumes_from_saved_positions_and_across_reconnections(
    ws_live_server: BoundAddress,
) -> None:
    url = f"{ws_live_server.ws_url}/rooms/resume"
    await server.publish("room:resume", ChatOut("bot", "first"))
    saved: dict[str, Position] = {}
    shown: list[ChatOut] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow, url, saved, shown)
        await wait_until(lambda: len(shown) == 1)
        nursery.cancel_scope.cancel()

    # Later (another process, another day): only what it missed, no backlog.
    for text in ("second", "third"):
        await server.publish("room:resume", ChatOut("bot", text))
    again: list[ChatOut] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow, url, saved, again)
        await wait_until(lambda: len(again) == 2)
        assert texts(again) == ["second", "third"]

        # The connection drops: the client reconnects by itself and resumes.
        await server.close_all(1012, "restart")
        await server.publish("room:resume", ChatOut("bot", "fourth"))
        await wait_until(lambda: len(again) == 3)
        nursery.cancel_scope.cancel()
    assert texts(again) == ["second", "third", "fourth"]  # no backlog in between


async def test_a_position_out_of_reach_gets_a_backlog(ws_live_server: BoundAddress) -> None:
    url = f"{ws_live_server.ws_url}/rooms/lost"
    for n in range(25):
        await server.publish("room:lost", ChatOut("bot", f"m{n}"))
    stale = {"room:lost": Position("another-epoch", 3)}  # e.g. before a restart
    shown: list[ChatOut] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow, url, stale, shown)
        await wait_until(lambda: len(shown) == 20)
        await server.publish("room:lost", ChatOut("bot", "live"))
        await wait_until(lambda: len(shown) == 21)
        nursery.cancel_scope.cancel()
    assert texts(shown) == [f"m{n}" for n in range(5, 25)] + ["live"]  # the last 20


def test_the_policy_example() -> None:
    assert policy.match("room:lobby") == History(size=100, ttl=300.0)
    assert policy.match("ticker:EURUSD") == History(size=1000, ttl=60.0)
    assert policy.match("lobby") is None
    assert policy.max_topics == 50_000
