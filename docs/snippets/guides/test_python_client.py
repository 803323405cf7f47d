"""The "Python client" guide's snippets, run against a real server."""

from __future__ import annotations

import pytest
import trio
from python_client import (
    Chat,
    ChatOut,
    RoomView,
    careful,
    chat,
    load_test,
    say_hello,
    server,
    show_room,
    summary,
    time_bot,
)

from trio_wsroutes import BoundAddress, WebSocketServer
from trio_wsroutes.client import Position, connect


@pytest.fixture
def ws_server() -> WebSocketServer:
    return server


async def test_basics_and_errors(ws_live_server: BoundAddress) -> None:
    url = f"{ws_live_server.ws_url}/chat/basics"
    with trio.fail_after(10):
        assert await say_hello(url) == ChatOut(user="ada", text="hello")
        await careful(url)


async def test_the_bot_answers_in_the_room(ws_live_server: BoundAddress) -> None:
    url = f"{ws_live_server.ws_url}/chat/general"
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(time_bot, url)
            while server.subscriber_count("room:general") < 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
            async with connect(url, chat, token="grace") as human:
                await human.send(Chat(text="!time"))
                assert await human.receive() == ChatOut(user="grace", text="!time")
                answer = await human.receive()
                assert isinstance(answer, ChatOut)
                assert answer.user == "timebot"
                assert answer.text.startswith("It is ")
            nursery.cancel_scope.cancel()


async def test_load_test(ws_live_server: BoundAddress) -> None:
    with trio.fail_after(20):
        latencies = await load_test(f"{ws_live_server.ws_url}/chat/load", 5, 10)
    assert len(latencies) == 50
    assert summary(latencies).startswith("50 requests, median ")


async def test_a_room_whose_history_was_lost_is_reloaded(ws_live_server: BoundAddress) -> None:
    url = f"{ws_live_server.ws_url}/chat/recovery"
    view = RoomView()
    saved = {"room:recovery": Position("gone", 5)}  # from a server that has restarted since
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(show_room, url, view, saved)
            while server.subscriber_count("room:recovery") < 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
            async with connect(url, chat, token="grace") as human:
                await human.send(Chat(text="hello again"))
                # The old position did not recover: the view was reloaded, and the
                # position to save is the new one.
                while view.reloads < 1 or saved["room:recovery"].epoch == "gone":  # noqa: ASYNC110
                    await trio.sleep(0.01)
            assert view.reloads == 1
            nursery.cancel_scope.cancel()
