"""Snippets for the "Python client" guide (run by tests/test_docs.py)."""

# [route]
from __future__ import annotations

import math
import ssl
import statistics
import time

import attrs
import trio

from trio_wsroutes import (
    Connection,
    Context,
    History,
    MessageError,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
    message,
)
from trio_wsroutes.client import (
    Backoff,
    ConnectionDenied,
    ConnectionLost,
    Position,
    RecoveryInfo,
    RequestTimeout,
    ServerError,
    connect,
)


@attrs.frozen
class Chat:
    text: str = attrs.field(validator=attrs.validators.max_len(500))


@attrs.frozen
class Ping:
    timestamp: float


@message("message")
@attrs.frozen
class ChatOut:
    user: str
    text: str


@message("pong")
@attrs.frozen
class Pong:
    timestamp: float


async def verify(token: str) -> str | None:
    return token or None  # the token is the user name: a demo, not a policy


chat = (
    create_websocket_route("/chat/:room")
    .server_messages(ChatOut, Pong)
    .client_messages(Chat, Ping)  # what clients send: the Python client's send() takes these
    .authenticate(create_token_auth(verify))
)


@chat.on_connect
async def joined(ws: Connection[ChatOut | Pong], ctx: Context[str]) -> None:
    await ws.subscribe(f"room:{ctx.params['room']}")


@chat.on("chat", Chat)
async def on_chat(ws: Connection[ChatOut | Pong], data: Chat, ctx: Context[str]) -> None:
    if data.text.startswith("/"):
        raise MessageError("Commands are not supported", code="NO_COMMANDS")
    await ws.publish(
        f"room:{ctx.params['room']}", ChatOut(user=ctx.user, text=data.text), include_self=True
    )


@chat.on("ping", Ping)
async def on_ping(ws: Connection[ChatOut | Pong], data: Ping, ctx: Context[str]) -> Pong:
    return Pong(timestamp=data.timestamp)


server = WebSocketServer([chat], history={"room:*": History(size=100)})
# [/route]


# [basics]
async def say_hello(url: str) -> ChatOut | Pong:
    async with connect(url, chat, token="ada") as client:
        await client.send(Chat(text="hello"))  # wire type "chat", from chat.on("chat", Chat)
        pong = await client.request(Ping(timestamp=time.time()), Pong, timeout=5.0)
        print(f"round trip: {time.time() - pong.timestamp:.3f} s")  # pong is a Pong
        return await client.receive()  # ChatOut | Pong, decoded strictly


# [/basics]


# [errors]
async def careful(url: str) -> None:
    try:
        async with connect(url, chat, token="ada") as client:
            try:
                await client.request(Chat(text="/help"))
            except ServerError as error:
                print(error.code, error.message)  # NO_COMMANDS Commands are not supported
            try:
                await client.request(Ping(timestamp=0.0), Pong, timeout=2.0)
            except RequestTimeout as timeout:
                print(f"no answer to request {timeout.id}")
            except ConnectionLost:
                print("the connection ended first: the ping may or may not have run")
    except ConnectionDenied as denied:
        print(denied.status, denied.code)  # 401 UNAUTHORIZED without a token


# [/errors]


# [reconnect]
async def follow(url: str, saved: dict[str, Position]) -> None:
    async def back() -> None:
        print("reconnected")

    async with connect(
        url,
        chat,
        token="ada",
        reconnect=Backoff(initial=0.5, maximum=30.0, max_attempts=20),
        on_reconnect=back,
        since=saved,  # positions saved by an earlier run, if any
    ) as client:
        async for msg in client:  # goes on across reconnections
            print(msg)
            saved.update(client.positions)  # persist these to resume in another process


# [/reconnect]


# [recovery]
@attrs.define
class RoomView:
    """What the app shows of a room."""

    messages: list[ChatOut] = attrs.field(factory=list)
    reloads: int = 0


async def fetch_snapshot(topic: str) -> list[ChatOut]:
    """The room's latest messages from the app's own store (an HTTP API, a database)."""
    return []


async def show_room(url: str, view: RoomView, saved: dict[str, Position]) -> None:
    async def on_recovery(info: RecoveryInfo) -> None:
        if not info.recovered:  # something was lost while away: start from a snapshot
            view.messages = await fetch_snapshot(info.topic)
            view.reloads += 1

    async with connect(
        url, chat, token="ada", reconnect=True, since=saved, on_recovery=on_recovery
    ) as client:
        async for msg in client:
            if isinstance(msg, ChatOut):
                view.messages.append(msg)
            saved.update(client.positions)


# [/recovery]


# [tls]
async def secure(host: str, ca_file: str) -> None:
    context = ssl.create_default_context(cafile=ca_file)  # or the system's, by default
    async with connect(f"wss://{host}/chat/general", chat, token="ada", ssl_context=context):
        pass


# [/tls]


# [bot]
async def time_bot(url: str) -> None:
    """Answer "!time" in the room, across server restarts, until cancelled."""
    async with connect(url, chat, token="timebot", reconnect=True) as client:
        while True:
            try:
                async for msg in client:
                    if isinstance(msg, ChatOut) and msg.text == "!time":
                        await client.send(Chat(text=time.strftime("It is %H:%M:%S")))
            except ServerError as error:  # refused a message of ours: log it, go on
                print(f"server said {error.code}: {error.message}")
            else:
                return  # the server closed the chat for good


# [/bot]


# [load-test]
async def load_test(url: str, clients: int, requests: int) -> list[float]:
    """Open ``clients`` connections, each sending ``requests`` pings one after the
    other; return every round trip in seconds."""
    latencies: list[float] = []

    async def one_client(n: int) -> None:
        async with connect(url, chat, token=f"load-{n}", max_queue=10_000) as client:
            for _ in range(requests):
                start = trio.current_time()
                await client.request(Ping(timestamp=time.time()), Pong, timeout=10.0)
                latencies.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        for n in range(clients):
            nursery.start_soon(one_client, n)
    return latencies


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    median = statistics.median(ordered)
    return f"{len(ordered)} requests, median {median * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"


# [/load-test]
