"""The typed Python client (``trio_wsroutes.client``) against real servers.

Every test that takes ``serve_live`` runs under hypercorn and under the native
transport. 127.0.0.1 only; every wait is bounded.

The server side of ``ack`` and of positions (history) lands separately; until then the
tests for them have the server send the exact wire format with ``ws.send_text``, which
is what a server sends, and the tests that use the server's own features are marked.
"""

from __future__ import annotations

import functools
import inspect
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import attrs
import orjson
import pytest
import trio
import trustme

import trio_wsroutes
import trio_wsroutes.client
from tests._messages import TimedPing, TimedPong
from tests.conftest import ServeLive, live_server, wait_until
from trio_wsroutes import (
    BoundAddress,
    Connection,
    Context,
    History,
    MessageError,
    Reject,
    Request,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
    message,
)
from trio_wsroutes._client_messages import ITEM_OVERHEAD
from trio_wsroutes._server import native_endpoints
from trio_wsroutes._transports._memory import memory_stream_pair
from trio_wsroutes._transports.native import serve_stream
from trio_wsroutes.client import (
    Backoff,
    Client,
    ConnectionDenied,
    ConnectionLost,
    DecodeError,
    Position,
    ReceiveQueueFull,
    RequestTimeout,
    ServerError,
    WebSocketClosed,
    connect,
    open_streams_with,
)

TIMEOUT = 10
ROOT = Path(__file__).resolve().parent.parent
FAST = Backoff(initial=0.02, maximum=0.2)

# -- messages ---------------------------------------------------------------------------


@attrs.frozen
class Chat:
    text: str = attrs.field(validator=attrs.validators.min_len(1))


@attrs.frozen
class Flood:
    """Ask the server for ``n`` notes, then a reply."""

    n: int


@attrs.frozen
class Raw:
    """Ask the server to send ``frames`` as they are (the wire format under test)."""

    frames: list[str]


@attrs.frozen
class Hang:
    """A request the server answers only when the test says so."""


@attrs.frozen
class Quiet:
    """A handler that returns ``None``."""


@attrs.frozen
class Undeclared:
    x: int


@message("note")
@attrs.frozen
class Note:
    n: int


@message("said")
@attrs.frozen
class Said:
    text: str


Out = TimedPong | Note | Said


@attrs.define
class Hooks:
    """What the test route saw, and what it waits for."""

    release: trio.Event = attrs.field(factory=trio.Event)
    hanging: trio.Event = attrs.field(factory=trio.Event)
    requests: list[Request] = attrs.field(factory=list)
    on_connect: list[str] = attrs.field(factory=list)
    """Frames every new connection gets first (raw wire JSON)."""
    closes: list[int] = attrs.field(factory=list)
    closed: trio.Event = attrs.field(factory=trio.Event)


def make_route(hooks: Hooks) -> Any:
    route = create_websocket_route("/t").server_messages(TimedPong, Note, Said)

    @route.on_connect
    async def connected(ws: Connection[Out], ctx: Context[None]) -> None:
        hooks.requests.append(ctx.request)
        for frame in hooks.on_connect:
            await ws.send_text(frame)

    @route.on_close
    async def closed(ws: Connection[Out], code: int, reason: str, ctx: Context[None]) -> None:
        hooks.closes.append(code)
        hooks.closed.set()

    @route.on("ping", TimedPing)
    async def ping(ws: Connection[Out], data: TimedPing, ctx: Context[None]) -> TimedPong:
        return TimedPong(data.timestamp)

    @route.on("chat", Chat)
    async def chat(ws: Connection[Out], data: Chat, ctx: Context[None]) -> None:
        if data.text == "forbidden":
            raise MessageError("Not here", code="FORBIDDEN")
        await ws.send(Said(data.text))

    @route.on("flood", Flood)
    async def flood(ws: Connection[Out], data: Flood, ctx: Context[None]) -> TimedPong:
        for n in range(data.n):
            await ws.send(Note(n))
        return TimedPong(float(data.n))

    @route.on("raw", Raw)
    async def raw(ws: Connection[Out], data: Raw, ctx: Context[None]) -> None:
        for frame in data.frames:
            await ws.send_text(frame)

    @route.on("hang", Hang)
    async def hang(ws: Connection[Out], data: Hang, ctx: Context[None]) -> TimedPong:
        hooks.hanging.set()
        await hooks.release.wait()
        return TimedPong(0.0)

    @route.on("quiet", Quiet)
    async def quiet(ws: Connection[Out], data: Quiet, ctx: Context[None]) -> None:
        return None

    return route


@asynccontextmanager
async def serving(
    serve_live: ServeLive, **options: Any
) -> AsyncIterator[tuple[str, Any, Hooks, WebSocketServer]]:
    hooks = Hooks()
    route = make_route(hooks)
    server = WebSocketServer([route], **options)
    async with serve_live(server) as address:
        yield address.ws_url + "/t", route, hooks, server


def client_for(url: str, route: Any, **options: Any) -> Client[Out]:
    options.setdefault("proxy", False)
    options.setdefault("request_timeout", TIMEOUT)
    options.setdefault("open_timeout", TIMEOUT)
    return connect(url, route, **options)


def wire(**body: Any) -> str:
    return orjson.dumps(body).decode()


# -- the stream hook ------------------------------------------------------------------------


async def test_the_stream_hook_opens_each_connection_instead_of_tcp() -> None:
    route = make_route(Hooks())
    server = WebSocketServer([route])
    opened = 0
    async with trio.open_nursery() as nursery:

        async def open_stream() -> trio.abc.Stream:
            nonlocal opened
            opened += 1
            client_end, server_end = memory_stream_pair(("127.0.0.1", 50000))
            serve = functools.partial(serve_stream, peer=("127.0.0.1", 50000))
            nursery.start_soon(serve, server_end, *native_endpoints(server))
            return client_end

        # A host that does not resolve: nothing goes over the network.
        client = open_streams_with(client_for("ws://nowhere.invalid/t", route), open_stream)
        with trio.fail_after(TIMEOUT):
            async with client:
                assert await client.request(TimedPing(1.0), TimedPong) == TimedPong(1.0)
                with pytest.raises(RuntimeError, match="before the client is entered"):
                    open_streams_with(client, open_stream)
        nursery.cancel_scope.cancel()
    assert opened == 1


# -- requests and replies -----------------------------------------------------------------


async def test_request_returns_the_typed_reply(serve_live: ServeLive) -> None:
    async with serving(serve_live) as (url, route, _, _), client_for(url, route) as client:
        with trio.fail_after(TIMEOUT):
            pong = await client.request(TimedPing(1.5), TimedPong)
        assert pong == TimedPong(1.5)


async def test_concurrent_requests_get_their_own_replies(serve_live: ServeLive) -> None:
    async with serving(serve_live) as (url, route, _, _), client_for(url, route) as client:
        results: dict[int, TimedPong] = {}

        async def one(n: int) -> None:
            results[n] = await client.request(TimedPing(float(n)), TimedPong)

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for n in range(20):
                    nursery.start_soon(one, n)
        assert results == {n: TimedPong(float(n)) for n in range(20)}


async def test_messages_that_arrive_during_a_request_stay_queued(serve_live: ServeLive) -> None:
    async with serving(serve_live) as (url, route, _, _), client_for(url, route) as client:
        with trio.fail_after(TIMEOUT):
            assert await client.request(Flood(3), TimedPong) == TimedPong(3.0)
            assert client.queued == 3
            assert [await client.receive() for _ in range(3)] == [Note(0), Note(1), Note(2)]


async def test_send_and_iterate(serve_live: ServeLive) -> None:
    async with serving(serve_live) as (url, route, _, _), client_for(url, route) as client:
        with trio.fail_after(TIMEOUT):
            await client.send(Chat("one"))
            await client.send(Chat("two"))
            seen: list[Out] = []
            async for msg in client:
                seen.append(msg)
                if len(seen) == 2:
                    break
        assert seen == [Said("one"), Said("two")]


async def test_request_to_a_handler_returning_none_completes_on_ack(
    serve_live: ServeLive,
) -> None:
    # The server's own ack lands separately: here the server sends the wire format,
    # {"type": "ack", "id": ...}, for the client's first request (ids count from 1).
    async with serving(serve_live) as (url, route, _, _), client_for(url, route) as client:
        with trio.fail_after(TIMEOUT):
            frames = [wire(type="ack", id=1)]
            assert await client.request(Raw(frames)) is None
            # A reply is also a completion for a request that asks for no reply type.
            assert await client.request(TimedPing(2.0)) is None
            assert client.queued == 0


async def test_server_acks_a_request_whose_handler_returns_none(serve_live: ServeLive) -> None:
    async with serving(serve_live) as (url, route, _, _), client_for(url, route) as client:
        assert await client.request(Quiet(), timeout=1.0) is None


async def test_a_timeout_names_the_request_and_a_late_reply_is_dropped(
    serve_live: ServeLive,
) -> None:
    async with serving(serve_live) as (url, route, hooks, _), client_for(url, route) as client:
        with pytest.raises(RequestTimeout) as timed_out:
            await client.request(Hang(), TimedPong, timeout=0.2)
        assert isinstance(timed_out.value, TimeoutError)
        assert timed_out.value.id == 1
        assert "request 1" in str(timed_out.value)
        hooks.release.set()  # the late reply goes out now
        with trio.fail_after(TIMEOUT):
            assert await client.request(TimedPing(3.0), TimedPong) == TimedPong(3.0)
            await client.send(Chat("after"))
            assert await client.receive() == Said("after")  # the late TimedPong never shows


async def test_a_pending_request_fails_when_the_connection_ends(serve_live: ServeLive) -> None:
    async with serving(serve_live) as (url, route, hooks, server):
        client = client_for(url, route)
        async with client, trio.open_nursery() as nursery:
            with trio.fail_after(TIMEOUT):

                async def shut_down() -> None:
                    await hooks.hanging.wait()  # the server is handling the request
                    await server.close_all(1011, "gone")

                nursery.start_soon(shut_down)
                with pytest.raises(ConnectionLost) as lost:
                    await client.request(Hang(), TimedPong)
        assert lost.value.id == 1
        assert lost.value.code == 1011
        with pytest.raises(WebSocketClosed):
            await client.send(Chat("too late"))


# -- errors -------------------------------------------------------------------------------


async def test_an_invalid_request_raises_server_error_with_details(serve_live: ServeLive) -> None:
    async with serving(serve_live) as (url, route, _, _), client_for(url, route) as client:
        with attrs.validators.disabled():
            empty = Chat("")  # what the server refuses, sent anyway
        with trio.fail_after(TIMEOUT), pytest.raises(ServerError) as error:
            await client.request(empty, Said)
        assert error.value.code == "VALIDATION_ERROR"
        assert error.value.id == 1
        assert [d.path for d in error.value.details] == ["$.data.text"]


async def test_a_handler_error_code_reaches_the_caller(serve_live: ServeLive) -> None:
    async with serving(serve_live) as (url, route, _, _), client_for(url, route) as client:
        with trio.fail_after(TIMEOUT):
            with pytest.raises(ServerError) as error:
                await client.request(Chat("forbidden"))
            assert (error.value.code, error.value.message) == ("FORBIDDEN", "Not here")
            # The connection stays open; an error without a waiting request is raised
            # by receive(), in its place in the stream.
            await client.send(Chat("forbidden"))
            await client.send(Chat("fine"))
            with pytest.raises(ServerError) as unrequested:
                await client.receive()
            assert unrequested.value.code == "FORBIDDEN"
            assert unrequested.value.id is None
            assert await client.receive() == Said("fine")


async def test_only_the_routes_client_messages_can_be_sent(serve_live: ServeLive) -> None:
    async with serving(serve_live) as (url, route, _, _), client_for(url, route) as client:
        with pytest.raises(TypeError, match="not a client message"):
            await client.send(Undeclared(1))
        with pytest.raises(TypeError, match="not a client message"):
            await client.request(Undeclared(1), TimedPong)
        with pytest.raises(TypeError, match="not a server message"):
            await client.request(TimedPing(1.0), TimedPing)
        with pytest.raises(TypeError, match="not registered as 'chat'"):
            await client.send(TimedPing(1.0), type="chat")
        with trio.fail_after(TIMEOUT):
            assert await client.request(TimedPing(1.0), TimedPong) == TimedPong(
                1.0
            )  # nothing was sent


async def test_what_does_not_decode_is_raised_in_its_place(serve_live: ServeLive) -> None:
    frames = [
        wire(type="mystery", data={}),
        wire(type="pong", data={"timestamp": "soon"}),  # strict: a string is no float
        "not json",
        "[1, 2]",
        wire(type="note", data={"n": 7}),
    ]
    async with serving(serve_live) as (url, route, _, _), client_for(url, route) as client:
        with trio.fail_after(TIMEOUT):
            await client.send(Raw(frames))
            with pytest.raises(DecodeError, match="unknown message type 'mystery'") as unknown:
                await client.receive()
            assert unknown.value.type == "mystery"
            with pytest.raises(DecodeError) as invalid:
                await client.receive()
            assert invalid.value.type == "pong"
            assert [(d.path, d.message) for d in invalid.value.details] == [
                ("$.data.timestamp", "expected number, got string")
            ]
            with pytest.raises(DecodeError, match="invalid JSON"):
                await client.receive()
            with pytest.raises(DecodeError, match="not an envelope"):
                await client.receive()
            assert await client.receive() == Note(7)


async def test_a_reply_of_another_type_is_a_decode_error(serve_live: ServeLive) -> None:
    async with serving(serve_live) as (url, route, _, _), client_for(url, route) as client:
        with trio.fail_after(TIMEOUT):
            with pytest.raises(DecodeError, match="expected a 'said' reply, got 'pong'"):
                await client.request(TimedPing(1.0), Said)
            frames = [wire(type="ack", id=2)]
            with pytest.raises(DecodeError, match="got an ack"):
                await client.request(Raw(frames), TimedPong)


async def test_a_class_under_two_wire_types_needs_type(serve_live: ServeLive) -> None:
    route = create_websocket_route("/two").server_messages(Said)

    @route.on("shout", Chat)
    async def shout(ws: Connection[Said], data: Chat, ctx: Context[None]) -> Said:
        return Said(data.text.upper())

    @route.on("whisper", Chat)
    async def whisper(ws: Connection[Said], data: Chat, ctx: Context[None]) -> Said:
        return Said(data.text.lower())

    async with serve_live(WebSocketServer([route])) as address:
        async with connect(f"{address.ws_url}/two", route, proxy=False) as client:
            with pytest.raises(TypeError, match="registered under shout, whisper"):
                await client.send(Chat("Hi"))
            with trio.fail_after(TIMEOUT):
                assert await client.request(Chat("Hi"), Said, type="whisper") == Said("hi")
                assert await client.request(Chat("Hi"), Said, type="shout") == Said("HI")


async def test_a_client_is_used_inside_async_with() -> None:
    client = connect("ws://127.0.0.1:9/t", make_route(Hooks()))
    with pytest.raises(RuntimeError, match="async with"):
        await client.send(Chat("x"))
    await client.close()  # nothing to close


# -- the upgrade ----------------------------------------------------------------------


async def test_a_denied_upgrade_raises_with_status_and_code(serve_live: ServeLive) -> None:
    async def verify(token: str) -> str | None:
        if token == "banned":
            raise Reject(403, "Banned", "BANNED")
        return "ada" if token == "good" else None

    route = create_websocket_route("/secure").authenticate(create_token_auth(verify))
    route = route.server_messages(TimedPong)

    @route.on("ping", TimedPing)
    async def ping(ws: Connection[TimedPong], data: TimedPing, ctx: Context[str]) -> TimedPong:
        return TimedPong(data.timestamp)

    async with serve_live(WebSocketServer([route])) as address:
        url = address.ws_url + "/secure"
        with trio.fail_after(TIMEOUT):
            async with connect(url, route, token="good", proxy=False) as client:
                assert await client.request(TimedPing(1.0), TimedPong) == TimedPong(1.0)
            with pytest.raises(ConnectionDenied) as denied:
                async with connect(url, route, token="bad", proxy=False):
                    pass
            assert (denied.value.status, denied.value.code) == (401, "UNAUTHORIZED")
            with pytest.raises(ConnectionDenied) as banned:
                async with connect(url, route, token="banned", proxy=False):
                    pass
            assert (banned.value.status, banned.value.code) == (403, "BANNED")
            assert banned.value.message == "Banned"
            with pytest.raises(ConnectionDenied) as missing:
                async with connect(address.ws_url + "/nowhere", route, proxy=False):
                    pass
            assert (missing.value.status, missing.value.code) == (404, "NOT_FOUND")


async def test_headers_subprotocols_and_compression_are_offered(serve_live: ServeLive) -> None:
    async with serving(serve_live) as (url, route, hooks, _):
        with trio.fail_after(TIMEOUT):
            async with client_for(url, route, headers={"x-bot": "1"}, subprotocols=["v1"]):
                pass
            async with client_for(url, route, compression=False):
                pass
    first, second = hooks.requests
    assert first.headers.get("x-bot") == "1"
    assert first.subprotocols == ("v1",) or list(first.subprotocols) == ["v1"]
    assert "permessage-deflate" in (first.headers.get("sec-websocket-extensions") or "")
    assert second.headers.get("sec-websocket-extensions") is None


# -- reconnection ---------------------------------------------------------------------


async def connections(server: WebSocketServer, count: int) -> None:
    await wait_until(lambda: len(server.registry) >= count)


async def test_reconnects_after_a_server_restart_on_the_same_port(transport: str) -> None:
    first_hooks, second_hooks = Hooks(), Hooks()
    first_hooks.on_connect = [wire(type="note", data={"n": 1})]
    second_hooks.on_connect = [wire(type="note", data={"n": 2})]
    route = make_route(first_hooks)
    restarted = trio.Event()
    reconnected: list[int] = []

    async def on_reconnect() -> None:
        reconnected.append(client.reconnects)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with live_server(WebSocketServer([route]), transport) as address:
                url = f"{address.ws_url}/t"
                client = client_for(url, route, reconnect=FAST, on_reconnect=on_reconnect)
                await nursery.start(hold_client, client, restarted)
                assert await client.receive() == Note(1)
            # The first server is gone (it closed with 1001); the client keeps trying.
            assert not client.connected
            waiting = trio.Event()

            async def request_while_away(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                task_status.started()
                # Waits for the new connection, then goes out on it.
                assert await client.request(TimedPing(9.0), TimedPong) == TimedPong(9.0)
                waiting.set()

            await nursery.start(request_while_away)
            second = WebSocketServer([make_route(second_hooks)])
            async with live_server(second, transport, address.port):
                seen: list[Out] = []
                async for msg in client:  # the same iteration goes on
                    seen.append(msg)
                    break
                assert seen == [Note(2)]
                await waiting.wait()
                assert client.reconnects == 1
                assert reconnected == [1]
                restarted.set()


async def reconnected(client: Client[Out], times: int = 1) -> None:
    await wait_until(lambda: client.reconnects >= times)


async def hold_client(
    client: Client[Out], done: trio.Event, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    async with client:
        task_status.started()
        await done.wait()


@pytest.mark.parametrize("code", [1001, 1011, 1012, 1013, 1014])
async def test_reconnects_after_a_close_with_a_transient_code(
    serve_live: ServeLive, code: int
) -> None:
    async with serving(serve_live) as (url, route, _, server):
        async with client_for(url, route, reconnect=FAST) as client:
            await connections(server, 1)
            await server.close_all(code, "come back")
            await reconnected(client)
            with trio.fail_after(TIMEOUT):
                assert await client.request(TimedPing(1.0), TimedPong) == TimedPong(1.0)


@pytest.mark.parametrize(("code", "iteration_ends"), [(1000, True), (1008, False)])
async def test_no_reconnection_after_a_deliberate_close_by_the_server(
    serve_live: ServeLive, code: int, iteration_ends: bool
) -> None:
    async with serving(serve_live) as (url, route, _, server):
        async with client_for(url, route, reconnect=FAST) as client:
            await connections(server, 1)
            await server.close_all(code, "bye")
            with trio.fail_after(TIMEOUT):
                if iteration_ends:
                    assert [msg async for msg in client] == []
                else:
                    with pytest.raises(WebSocketClosed) as closed:
                        async for _ in client:
                            pass
                    assert (closed.value.code, closed.value.reason) == (code, "bye")
            assert client.reconnects == 0
            with pytest.raises(WebSocketClosed):
                await client.send(Chat("anyone?"))


async def test_without_reconnect_the_client_ends_with_the_connection(
    serve_live: ServeLive,
) -> None:
    async with serving(serve_live) as (url, route, _, server):
        async with client_for(url, route) as client:
            await connections(server, 1)
            await server.close_all(1012, "restart")
            with trio.fail_after(TIMEOUT), pytest.raises(WebSocketClosed) as closed:
                await client.receive()
            assert closed.value.code == 1012


async def test_a_denied_reconnection_ends_the_client(transport: str) -> None:
    route = make_route(Hooks())

    def nobody(request: Request) -> str | None:
        return None

    refusing = create_websocket_route("/t").authenticate(nobody)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            done = trio.Event()
            async with live_server(WebSocketServer([route]), transport) as address:
                client = client_for(f"{address.ws_url}/t", route, reconnect=FAST)
                await nursery.start(hold_client, client, done)
            # The next server on this port refuses everyone: no more attempts after that.
            async with live_server(WebSocketServer([refusing]), transport, address.port):
                with pytest.raises(ConnectionDenied) as denied:
                    await client.receive()
                assert (denied.value.status, denied.value.code) == (401, "UNAUTHORIZED")
                with pytest.raises(ConnectionDenied):
                    async for _ in client:
                        pass
                assert client.reconnects == 0
            done.set()


async def test_a_busy_server_is_retried_on_reconnection(serve_live: ServeLive) -> None:
    busy = [0]  # how many upgrades to refuse with 503 SERVER_BUSY

    def admit(request: Request) -> str:
        if busy[0]:
            busy[0] -= 1
            raise Reject(503, "Server is at capacity", "SERVER_BUSY", headers={"retry-after": "0"})
        return "ok"

    route = create_websocket_route("/busy").authenticate(admit).server_messages(TimedPong)

    @route.on("ping", TimedPing)
    async def ping(ws: Connection[TimedPong], data: TimedPing, ctx: Context[str]) -> TimedPong:
        return TimedPong(data.timestamp)

    server = WebSocketServer([route])
    async with serve_live(server) as address:
        url = f"{address.ws_url}/busy"
        busy[0] = 1
        with pytest.raises(ConnectionDenied) as denied:  # the first connection is not retried
            async with connect(url, route, reconnect=FAST, proxy=False):
                pass
        assert (denied.value.status, denied.value.code) == (503, "SERVER_BUSY")
        assert denied.value.retry_after == 0.0
        async with connect(url, route, reconnect=FAST, proxy=False) as client:
            busy[0] = 2
            await connections(server, 1)
            await server.close_all(1013, "try again later")
            await wait_until(lambda: client.reconnects == 1)
            assert busy == [0]  # two refusals, then in
            with trio.fail_after(TIMEOUT):
                assert await client.request(TimedPing(2.0), TimedPong) == TimedPong(2.0)


async def test_reconnection_gives_up_after_max_attempts(transport: str) -> None:
    route = make_route(Hooks())
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            done = trio.Event()
            async with live_server(WebSocketServer([route]), transport) as address:
                backoff = Backoff(initial=0.01, maximum=0.02, max_attempts=3)
                client = client_for(f"{address.ws_url}/t", route, reconnect=backoff)
                await nursery.start(hold_client, client, done)
            # No server comes back: three refused attempts, then the end.
            with pytest.raises(WebSocketClosed) as closed:
                await client.receive()
            assert closed.value.code == 1001
            assert isinstance(closed.value.__cause__, OSError)
            done.set()


# -- positions ------------------------------------------------------------------------


def positioned(n: int, offset: int, topic: str = "room:a", epoch: str = "e1") -> str:
    return wire(type="note", data={"n": n}, topic=topic, offset=offset, epoch=epoch)


async def test_positions_are_kept_and_sent_back_on_reconnection(serve_live: ServeLive) -> None:
    odd = "a b&c=d@x:y"  # the query parameter is URL-encoded
    async with serving(serve_live) as (url, route, hooks, server):
        hooks.on_connect = [positioned(1, 7), positioned(2, 3, topic=odd)]
        async with client_for(url + "?x=1", route, reconnect=FAST) as client:
            with trio.fail_after(TIMEOUT):
                assert await client.receive() == Note(1)
                assert client.positions == {"room:a": Position("e1", 7)}
                hooks.on_connect = [positioned(3, 8)]
                await connections(server, 1)
                await wait_until(lambda: client.queued == 1)  # the second one has arrived
                await server.close_all(1012, "restart")
                await reconnected(client)
                # Resumed from everything received, read or not.
                assert await client.request(TimedPing(1.0), TimedPong) == TimedPong(1.0)
                first, second = hooks.requests
                assert first.query.get_all("since") == []
                assert second.query.get_all("since") == ["room:a@e1:7", f"{odd}@e1:3"]
                assert second.query.get_all("x") == ["1"]
                assert await client.receive() == Note(2)
                assert await client.receive() == Note(3)
                assert client.positions == {"room:a": Position("e1", 8), odd: Position("e1", 3)}


async def test_since_resumes_from_saved_positions(serve_live: ServeLive) -> None:
    saved = {"room:a": Position("e0", 41)}
    async with serving(serve_live) as (url, route, hooks, _):
        async with client_for(url, route, since=saved) as client:
            assert client.positions == saved
    assert hooks.requests[0].query.get_all("since") == ["room:a@e0:41"]


async def test_a_malformed_position_is_a_decode_error(serve_live: ServeLive) -> None:
    frames = [
        wire(type="note", data={"n": 1}, topic="t", offset="7", epoch="e"),
        positioned(2, 1),
    ]
    async with serving(serve_live) as (url, route, _, _), client_for(url, route) as client:
        with trio.fail_after(TIMEOUT):
            await client.send(Raw(frames))
            with pytest.raises(DecodeError, match="malformed position"):
                await client.receive()
            assert await client.receive() == Note(2)
            assert client.positions == {"room:a": Position("e1", 1)}


async def test_a_reconnecting_client_misses_nothing_the_server_still_has(
    serve_live: ServeLive,
) -> None:
    route = create_websocket_route("/room").server_messages(Note)

    @route.on_connect
    async def join(ws: Connection[Note], ctx: Context[None]) -> None:
        await ws.subscribe("room:a")

    server = WebSocketServer([route], history={"room:*": History(size=100, ttl=300.0)})
    async with serve_live(server) as address:
        client = connect(f"{address.ws_url}/room", route, reconnect=FAST, proxy=False)
        async with client:
            with trio.fail_after(TIMEOUT):
                await wait_until(lambda: server.subscriber_count("room:a") == 1)
                await server.publish("room:a", Note(1))
                assert await client.receive() == Note(1)
                start = client.positions["room:a"]
                await server.close_all(1012, "restart")
                # Published while the client is away (or already back): no gap, no
                # duplicate either way.
                await server.publish("room:a", Note(2))
                await server.publish("room:a", Note(3))
                await wait_until(
                    lambda: client.reconnects == 1 and server.subscriber_count("room:a") == 1
                )
                await server.publish("room:a", Note(4))
                assert [await client.receive() for _ in range(3)] == [Note(2), Note(3), Note(4)]
                assert client.positions["room:a"] == Position(start.epoch, start.offset + 3)


# -- bounded memory -------------------------------------------------------------------


async def queued(client: Client[Out], count: int) -> None:
    await wait_until(lambda: client.queued >= count)


# A queued note holds the memory of its 30 characters of JSON and of its queue entry.
NOTE_BYTES = sys.getsizeof(wire(type="note", data={"n": 0})) + ITEM_OVERHEAD


@pytest.mark.parametrize("limits", [{"max_queue": 5}, {"max_queue_bytes": 5 * NOTE_BYTES}])
async def test_a_full_queue_stops_reading_and_loses_nothing(
    serve_live: ServeLive, limits: dict[str, int]
) -> None:
    # Five notes fit either limit.
    async with serving(serve_live) as (url, route, _, _):
        async with client_for(url, route, **limits) as client:
            await client.send(Flood(50))
            await queued(client, 5)
            await trio.sleep(0.2)  # the server goes on sending; the client reads no more
            assert client.queued == 5
            with trio.fail_after(TIMEOUT):
                notes = [await client.receive() for _ in range(50)]
                assert notes == [Note(n) for n in range(50)]
                assert await client.receive() == TimedPong(50.0)  # the reply to a send: no id


async def test_a_request_gets_its_reply_past_a_full_queue(serve_live: ServeLive) -> None:
    async with serving(serve_live) as (url, route, _, _):
        async with client_for(url, route, max_queue=5) as client:
            await client.send(Flood(4))  # four notes and an unrequested TimedPong: full
            await queued(client, 5)
            with trio.fail_after(TIMEOUT):
                # Three more notes come before the reply: read on, up to twice the limit.
                assert await client.request(Flood(3), TimedPong) == TimedPong(3.0)
                assert client.queued == 8
                # Five more would pass twice the limit: the request gives up, not the client.
                with pytest.raises(ReceiveQueueFull) as full:
                    await client.request(Flood(5), TimedPong)
                assert full.value.id == 2
                expected = [*map(Note, range(4)), TimedPong(4.0), *map(Note, range(3))]
                expected += map(Note, range(5))
                assert [await client.receive() for _ in range(len(expected))] == expected
                await client.send(Chat("end"))
                assert await client.receive() == Said("end")  # the given-up reply is dropped


# -- keepalive ------------------------------------------------------------------------


async def test_the_client_answers_the_routes_heartbeat_and_websocket_pings(
    serve_live: ServeLive,
) -> None:
    hooks = Hooks()
    route = make_route(hooks).heartbeat(0.05, timeout=0.2)
    server = WebSocketServer([route], heartbeat_interval=0.05, heartbeat_timeout=0.2)
    async with serve_live(server) as address:
        async with client_for(f"{address.ws_url}/t", route, ping_interval=None) as client:
            await trio.sleep(0.6)  # silent for three heartbeat timeouts
            assert client.connected
            with trio.fail_after(TIMEOUT):
                assert await client.request(TimedPing(1.0), TimedPong) == TimedPong(1.0)
            assert hooks.closes == []


# -- closing --------------------------------------------------------------------------


async def test_close_keeps_what_was_queued_then_iteration_ends(serve_live: ServeLive) -> None:
    async with serving(serve_live) as (url, route, hooks, _):
        hooks.on_connect = [wire(type="note", data={"n": 1}), wire(type="note", data={"n": 2})]
        async with client_for(url, route) as client:
            await queued(client, 2)
            with trio.fail_after(TIMEOUT):
                await client.close()
                assert [msg async for msg in client] == [Note(1), Note(2)]
            with pytest.raises(WebSocketClosed):
                await client.send(Chat("late"))
            await client.close()  # again: nothing to do


@pytest.mark.transports("native")  # hypercorn does not pass on the client's close code
async def test_the_close_code_tells_the_server_how_the_client_ended(
    serve_live: ServeLive,
) -> None:
    async with serving(serve_live) as (url, route, hooks, _):
        with trio.fail_after(TIMEOUT):
            async with client_for(url, route):
                pass
            with pytest.raises(ZeroDivisionError):  # as raised, not in an ExceptionGroup
                async with client_for(url, route):
                    1 / 0  # noqa: B018
            with trio.move_on_after(0.2):
                async with client_for(url, route):
                    await trio.sleep_forever()
            await wait_until(lambda: len(hooks.closes) == 3)
    assert hooks.closes == [1000, 1011, 1001]


# -- TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates() -> tuple[trustme.CA, trustme.LeafCert]:
    ca = trustme.CA()
    return ca, ca.issue_cert("127.0.0.1", "localhost")


@pytest.fixture
def tls_options(
    transport: str, certificates: tuple[trustme.CA, trustme.LeafCert], tmp_path: Path
) -> dict[str, Any]:
    """How to serve ``wss://`` under ``transport``."""
    _, cert = certificates
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return {"ssl_context": context}


@asynccontextmanager
async def serve_tls(
    server: WebSocketServer, transport: str, options: dict[str, Any]
) -> AsyncIterator[BoundAddress]:
    serve = server.serve if transport == "hypercorn" else server.serve_native
    stop = trio.Event()
    async with trio.open_nursery() as nursery:

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            await serve(
                "127.0.0.1", 0, shutdown_trigger=stop.wait, task_status=task_status, **options
            )

        addresses: list[BoundAddress] = await nursery.start(run)
        try:
            yield addresses[0]
        finally:
            stop.set()


async def test_wss_with_a_trusted_certificate(
    transport: str,
    certificates: tuple[trustme.CA, trustme.LeafCert],
    tls_options: dict[str, Any],
) -> None:
    ca, _ = certificates
    route = make_route(Hooks())
    async with serve_tls(WebSocketServer([route]), transport, tls_options) as address:
        url = f"wss://127.0.0.1:{address.port}/t"
        trusted = ssl.create_default_context()
        ca.configure_trust(trusted)
        with trio.fail_after(TIMEOUT):
            async with client_for(url, route, ssl_context=trusted) as client:
                assert await client.request(TimedPing(4.0), TimedPong) == TimedPong(4.0)
            with pytest.raises(ssl.SSLCertVerificationError):
                async with client_for(url, route, ssl_context=ssl.create_default_context()):
                    pass


# -- the public surface -----------------------------------------------------------------


def test_public_names_are_documented() -> None:
    module = trio_wsroutes.client
    for name in module.__all__:
        obj = getattr(module, name)
        assert inspect.getdoc(obj), name
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if attr.startswith("_") or not (callable(value) or isinstance(value, property)):
                    continue
                assert inspect.getdoc(value), f"{name}.{attr}"


def test_connect_refuses_bad_arguments() -> None:
    route = make_route(Hooks())
    with pytest.raises(ValueError, match="ws:// or wss://"):
        connect("http://127.0.0.1/t", route)
    with pytest.raises(ValueError, match="wss://"):
        connect("ws://127.0.0.1/t", route, ssl_context=ssl.create_default_context())
    with pytest.raises(TypeError, match="create_websocket_route"):
        connect("ws://127.0.0.1/t", cast(Any, "route"))
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial=0)


# -- the chat example's command-line client ---------------------------------------------


async def test_the_chat_command_line_client(serve_live: ServeLive) -> None:
    from examples.chat import client as chat_client
    from examples.chat.app import Chat as ChatIn
    from examples.chat.app import ChatOut, Joined, chat
    from examples.chat.app import server as chat_server
    from trio_wsroutes import PresenceJoin

    lines_in, lines_out = trio.open_memory_channel[str](10)
    output: list[str] = []

    async def read_line() -> str:
        try:
            return await lines_out.receive()
        except trio.EndOfChannel:
            return ""

    async with serve_live(chat_server) as address:
        url = f"{address.ws_url}/chat/cli"
        with trio.fail_after(TIMEOUT):
            async with connect(url, chat, proxy=False) as other:
                assert isinstance(await other.receive(), Joined)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(chat_client.run, url, "ada", read_line, output.append)
                    await wait_until(lambda: any(line.startswith("* you are") for line in output))
                    await lines_in.send("hello from the terminal\n")
                    # Ada's arrival, her rename, then her line (presence events typed).
                    seen = [await other.receive() for _ in range(4)]
                    assert [type(m).__name__ for m in seen] == [
                        "PresenceJoin",
                        "PresenceLeave",
                        "PresenceJoin",
                        "ChatOut",
                    ]
                    assert seen[2] == PresenceJoin("room:cli", None, {"name": "ada"})
                    assert seen[3] == ChatOut(
                        user="ada", text="hello from the terminal", room="cli"
                    )
                    await other.send(ChatIn(text="hi ada"))
                    await lines_in.send("/ping\n")
                    await lines_in.send("x" * 501 + "\n")  # refused before sending
                    await lines_in.send("/quit\n")
    assert output[0].startswith("* you are ")
    assert "<ada> hello from the terminal" in output
    assert any(line.endswith("> hi ada") for line in output)
    assert any(line.startswith("* round trip ") for line in output)
    assert any(line.startswith("! ") and "500" in line for line in output)


@pytest.mark.transports("hypercorn")
async def test_the_chat_client_command_runs(serve_live: ServeLive) -> None:
    from examples.chat.app import server as chat_server

    async with serve_live(chat_server) as address:
        with trio.fail_after(TIMEOUT):
            process = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "examples.chat.client",
                    "--room",
                    "general",
                    "--url",
                    address.ws_url,
                    "--name",
                    "cli",
                ],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            assert process.stdin is not None
            assert process.stdout is not None
            output = bytearray()
            try:
                await process.stdin.send_all(b"hello\n")
                while b"<cli> hello" not in output:
                    chunk = await process.stdout.receive_some()
                    assert chunk, output.decode()
                    output += chunk
                await process.stdin.aclose()  # the end of input leaves the chat
                assert await process.wait() == 0
            finally:
                if process.returncode is None:
                    process.kill()
    assert output.decode().startswith("* you are ")
