"""Acting on a user's connections: ``server.disconnect(user=...)`` closes every connection
of that user (3003 by default) and no other; ``server.subscribe(user=..., topic=...)`` and
``server.unsubscribe(...)`` change their subscriptions server-side; with a
:class:`RedisBroker` all three reach the user's connections on every server, through a
control channel that drops (and counts) what it cannot believe.

Real sockets on both transports, 127.0.0.1 only; the Redis tests run their own
``redis-server`` (tests/_redis.py). Every wait is bounded.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests._redis import RedisServer
from tests.conftest import ServeLive, live_server, wait_until
from tests.test_attacks_redis import resp
from trio_wsroutes import (
    BoundAddress,
    CloseCode,
    Connection,
    Context,
    RedisBroker,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
    message,
)
from trio_wsroutes._broker._control import UserCommand
from trio_wsroutes._broker.redis._control import encode_control
from trio_wsroutes.client import WebSocketClosed, connect

TIMEOUT = 20
SECRET = b"a shared secret, 32 bytes long!!"


@attrs.frozen
class Ping:
    n: int


@message("pong")
@attrs.frozen
class Pong:
    n: int


@message("alert")
@attrs.frozen
class Alert:
    text: str


def app(**options: Any) -> WebSocketServer:
    """``/u?token=NAME``: ``ctx.user`` is the name, its user id. Subscribing to any topic
    from a handler is refused: only the server subscribes a connection."""
    route = (
        create_websocket_route("/u")
        .server_messages(Pong, Alert)
        .authenticate(create_token_auth(lambda token: token or None))
    )

    @route.authorize_subscribe
    def nobody(ws: Connection[Pong | Alert], topic: str, ctx: Context[str]) -> bool:
        return False

    @route.on("ping", Ping)
    async def ping(ws: Connection[Pong | Alert], data: Ping, ctx: Context[str]) -> Pong:
        return Pong(data.n)

    return WebSocketServer([route], **options)


@asynccontextmanager
async def user(address: BoundAddress, name: str) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(f"{address.ws_url}/u?token={name}") as ws:
        yield ws


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await ws.get_message())
    return message


async def ping(ws: WebSocketConnection, n: int) -> None:
    """A round trip: what the server sent before it arrives first."""
    await ws.send_message(json.dumps({"type": "ping", "data": {"n": n}, "id": n}))


async def closed_with(ws: WebSocketConnection) -> int:
    while True:
        try:
            await ws.get_message()
        except ConnectionClosed as closed:
            code: int = closed.reason.code
            return code


async def test_disconnect_closes_every_connection_of_the_user_and_no_other(
    serve_live: ServeLive,
) -> None:
    server = app()
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            async with (
                user(address, "ada") as tab1,
                user(address, "ada") as tab2,
                user(address, "bob") as bob,
            ):
                for ws in (tab1, tab2, bob):  # admitted and registered
                    await ping(ws, 1)
                    assert await receive(ws) == {"type": "pong", "data": {"n": 1}, "id": 1}
                assert await server.disconnect(user="ada") == 2
                assert await closed_with(tab1) == CloseCode.FORBIDDEN
                assert await closed_with(tab2) == CloseCode.FORBIDDEN
                await ping(bob, 2)
                assert await receive(bob) == {"type": "pong", "data": {"n": 2}, "id": 2}
                await wait_until(lambda: len(server.registry) == 1)
                assert server.registry.by_user_id("ada") == []
                assert await server.disconnect(user="nobody", code=4000, reason="x") == 0


async def test_server_side_subscriptions_by_user_take_effect(serve_live: ServeLive) -> None:
    server = app()
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            async with user(address, "ada") as ada, user(address, "bob") as bob:
                for ws in (ada, bob):
                    await ping(ws, 0)
                    await receive(ws)
                # The route's authorize_subscribe refuses every topic: the server decides.
                assert await server.subscribe(user="ada", topic="alerts") == 1
                assert server.subscriber_count("alerts") == 1
                await server.publish("alerts", Alert("one"))
                assert await receive(ada) == {"type": "alert", "data": {"text": "one"}}
                assert await server.unsubscribe(user="ada", topic="alerts") == 1
                await server.publish("alerts", Alert("two"))
                for ws in (ada, bob):  # nothing came before the pong
                    await ping(ws, 3)
                    assert await receive(ws) == {"type": "pong", "data": {"n": 3}, "id": 3}
                assert server.subscriber_count("alerts") == 0


async def test_bad_arguments_are_refused_before_anything_happens() -> None:
    server = app()
    with pytest.raises(TypeError, match="user id"):
        await server.disconnect(user=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="user id"):
        await server.subscribe(user=True, topic="t")
    with pytest.raises(ValueError, match="close code"):
        await server.disconnect(user="ada", code=1005)
    with pytest.raises(ValueError, match="123 bytes"):
        await server.disconnect(user="ada", reason="x" * 124)
    with pytest.raises(ValueError, match="topic"):
        await server.subscribe(user="ada", topic="")


async def test_the_python_client_does_not_reconnect_after_3003(serve_live: ServeLive) -> None:
    server = app()
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            route = server.routes[0]
            url = f"{address.ws_url}/u"
            async with connect(url, route, token=lambda: "ada", reconnect=True) as client:
                assert await client.request(Ping(1), Pong) == Pong(1)
                await server.disconnect(user="ada", reason="banned")
                with pytest.raises(WebSocketClosed) as closed:
                    await client.receive()
                assert client.reconnects == 0
    assert (closed.value.code, closed.value.reason) == (CloseCode.FORBIDDEN, "banned")


# -- across servers, through Redis ------------------------------------------------------


def redis_app(redis: RedisServer, **options: Any) -> WebSocketServer:
    return app(broker=RedisBroker(redis.url, reconnect_delay=0.05, **options))


async def test_commands_on_one_server_reach_the_users_connections_on_another(
    redis: RedisServer,
) -> None:
    a, b = redis_app(redis), redis_app(redis)
    with trio.fail_after(TIMEOUT * 2):
        async with live_server(a) as on_a, live_server(b, "native") as on_b:
            async with user(on_b, "ada") as ada, user(on_b, "bob") as bob:
                for ws in (ada, bob):
                    await ping(ws, 0)
                    await receive(ws)
                assert await a.subscribe(user="ada", topic="alerts") == 0  # none on A
                await wait_until(lambda: b.subscriber_count("alerts") == 1)
                await a.publish("alerts", Alert("from A"))
                assert await receive(ada) == {"type": "alert", "data": {"text": "from A"}}
                assert await a.unsubscribe(user="ada", topic="alerts") == 0
                await wait_until(lambda: b.subscriber_count("alerts") == 0)
                async with user(on_a, "ada") as ada_on_a:
                    await ping(ada_on_a, 0)
                    await receive(ada_on_a)
                    assert await a.disconnect(user="ada", reason="banned") == 1
                    assert await closed_with(ada) == CloseCode.FORBIDDEN
                    assert await closed_with(ada_on_a) == CloseCode.FORBIDDEN
                await ping(bob, 5)
                assert await receive(bob) == {"type": "pong", "data": {"n": 5}, "id": 5}
    stats = b.broker.stats  # type: ignore[attr-defined]
    assert stats.control_received == 3
    assert stats.control_invalid == stats.unauthenticated == 0


async def test_control_messages_that_cannot_be_believed_are_dropped_and_counted(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_app(redis, secret=SECRET)
    broker: RedisBroker = server.broker  # type: ignore[assignment]
    channel = b"wsroutes:\x00control"
    disconnect = UserCommand("disconnect", "ada", code=3003, reason="")
    subscribe = UserCommand("subscribe", "ada", topic="alerts")
    now = round(time.time() * 1000)
    forged = encode_control(disconnect, b"1-ab", 1, secret=b"x" * 32, channel=channel)
    unsigned = encode_control(disconnect, b"1-ab", 2)
    stale = encode_control(
        disconnect, b"1-ab", 3, sent_ms=now - 300_000, secret=SECRET, channel=channel
    )
    genuine = encode_control(subscribe, b"1-ab", 4, secret=SECRET, channel=channel)
    garbage = [
        b"not the format",
        b"wsr1 c 1-ab 5 %d\n{}" % now,
        b'wsr1 c 1-ab 6 %d\n{"op":"explode","user":"ada"}' % now,
        b'wsr1 c 1-ab 07 %d\n{"op":"subscribe","user":"ada","topic":"t"}' % now,
        b'wsr1 c 1-ab 8 %d\n{"op":"subscribe","user":"ada","topic":"t","x":1}' % now,
        b'wsr1 c 1-ab 9 %d\n{"op":"disconnect","user":"ada","code":1005,"reason":""}' % now,
    ]
    caplog.set_level(logging.ERROR)
    with trio.fail_after(TIMEOUT):
        async with live_server(server, "native") as address, user(address, "ada") as ada:
            await ping(ada, 0)
            await receive(ada)
            for data in (forged, unsigned, stale, *garbage, genuine, genuine):
                resp(redis, b"PUBLISH", channel, data)
            await wait_until(lambda: broker.stats.control_received == 1)
            await wait_until(lambda: server.subscriber_count("alerts") == 1)  # the genuine one
            # Forged and unsigned; stale, the garbage and the replay.
            dropped = (2, 1 + len(garbage) + 1)
            await wait_until(
                lambda: (broker.stats.unauthenticated, broker.stats.control_invalid) == dropped
            )
            # Still connected: nothing dropped disconnected anyone, or ended the broker.
            await ping(ada, 1)
            assert await receive(ada) == {"type": "pong", "data": {"n": 1}, "id": 1}
            assert broker.connected
    assert not [r for r in caplog.records if r.name.startswith("trio_wsroutes")]


async def test_a_topic_named_like_the_control_channel_keeps_its_own_channel(
    redis: RedisServer,
) -> None:
    server = redis_app(redis)
    with trio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            address = await stack.enter_async_context(live_server(server, "native"))
            ada = await stack.enter_async_context(user(address, "ada"))
            await ping(ada, 0)
            await receive(ada)
            assert await server.subscribe(user="ada", topic="\x00control") == 1
            other = RedisBroker(redis.url)
            assert await other.publish("\x00control", Alert("a topic")) == 1
            assert await receive(ada) == {"type": "alert", "data": {"text": "a topic"}}
    assert server.broker.stats.control_invalid == 0  # type: ignore[attr-defined]
