"""``trio_wsroutes.testing``: the typed client in memory and live, ``TestConnection.request``.

The tests that take ``clients_for`` run one body four ways: in memory (a ``TestClient``
with either transport; the typed client always speaks the native transport) and live
(hypercorn and the native server on 127.0.0.1): what a test moves by changing one fixture.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import trio_wsroutes.testing
from tests._messages import TimedPing, TimedPong
from tests.conftest import live_server, wait_until
from trio_wsroutes import (
    Connection,
    Context,
    History,
    MessageError,
    WebSocketRoute,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
    message,
)
from trio_wsroutes.client import (
    Backoff,
    ConnectionDenied,
    ServerError,
    WebSocketClosed,
    connect,
)
from trio_wsroutes.client import RequestTimeout as ClientRequestTimeout
from trio_wsroutes.testing import (
    ClientFactory,
    ClientOptions,
    RequestTimeout,
    TestClient,
    TransportName,
    live_clients,
)

TIMEOUT = 10
FAST = Backoff(initial=0.01, maximum=0.05)


# -- the routes ---------------------------------------------------------------------


@attrs.frozen
class Chat:
    text: str = attrs.field(validator=attrs.validators.min_len(1))


@attrs.frozen
class Flood:
    n: int


@attrs.frozen
class Quiet:
    pass


@attrs.frozen
class Hang:
    pass


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
class Seen:
    """What the server saw."""

    params: list[dict[str, str]] = attrs.field(factory=list)
    queries: list[list[str]] = attrs.field(factory=list)
    headers: list[str | None] = attrs.field(factory=list)
    closes: list[int] = attrs.field(factory=list)
    release: trio.Event = attrs.field(factory=trio.Event)


def make_route(seen: Seen, path: str = "/rooms/:room") -> WebSocketRoute[None, Out]:
    route: WebSocketRoute[None, Out] = create_websocket_route(path).server_messages(
        TimedPong, Note, Said
    )

    @route.on_connect
    async def joined(ws: Connection[Out], ctx: Context[None]) -> None:
        seen.params.append(dict(ctx.params))
        seen.queries.append(ctx.request.query.get_all("x"))
        seen.headers.append(ctx.request.headers.get("x-bot"))
        await ws.subscribe(f"room:{ctx.params.get('room', '-')}")

    @route.on_close
    async def left(ws: Connection[Out], code: int, reason: str, ctx: Context[None]) -> None:
        await trio.sleep(0.01)  # a handler that takes a moment
        seen.closes.append(code)

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

    @route.on("quiet", Quiet)
    async def quiet(ws: Connection[Out], data: Quiet, ctx: Context[None]) -> None:
        return None

    @route.on("hang", Hang)
    async def hang(ws: Connection[Out], data: Hang, ctx: Context[None]) -> TimedPong:
        await ws.send(Note(-1))
        await seen.release.wait()
        return TimedPong(-1.0)

    return route


# -- one body, four ways --------------------------------------------------------------

ClientsFor = Callable[[WebSocketServer], AbstractAsyncContextManager[ClientFactory]]


@asynccontextmanager
async def in_memory(
    server: WebSocketServer, transport: TransportName
) -> AsyncIterator[ClientFactory]:
    async with TestClient(server, transport=transport) as test_client:
        yield test_client.client


@asynccontextmanager
async def live(server: WebSocketServer, transport: str) -> AsyncIterator[ClientFactory]:
    async with live_server(server, transport) as address:
        yield live_clients(address)


@pytest.fixture(params=["memory-asgi", "memory-native", "live-hypercorn", "live-native"])
def clients_for(request: pytest.FixtureRequest) -> ClientsFor:
    """``async with clients_for(server) as open_client``: a :class:`ClientFactory` for
    ``server``, in memory or live."""
    where, transport = str(request.param).split("-")
    if where == "memory":
        return functools.partial(in_memory, transport=transport)
    return functools.partial(live, transport=transport)


async def test_requests_replies_and_queued_messages(clients_for: ClientsFor) -> None:
    route = make_route(Seen())
    async with clients_for(WebSocketServer([route])) as open_client:
        async with open_client(route, "/rooms/a") as client:
            with trio.fail_after(TIMEOUT):
                assert await client.request(TimedPing(1.5), TimedPong) == TimedPong(1.5)
                assert await client.request(Flood(3), TimedPong) == TimedPong(3.0)
                assert client.queued == 3
                await client.send(Chat("hi"))
                seen: list[Out] = []
                async for msg in client:
                    seen.append(msg)
                    if len(seen) == 4:
                        break
                assert seen == [Note(0), Note(1), Note(2), Said("hi")]
                assert await client.request(Quiet()) is None  # completed by the ack


async def test_server_errors_reach_the_caller(clients_for: ClientsFor) -> None:
    route = make_route(Seen())
    async with clients_for(WebSocketServer([route])) as open_client:
        async with open_client(route, "/rooms/a") as client:
            with trio.fail_after(TIMEOUT):
                with attrs.validators.disabled():
                    empty = Chat("")
                with pytest.raises(ServerError) as invalid:
                    await client.request(empty, Said)
                assert (invalid.value.code, invalid.value.id) == ("VALIDATION_ERROR", 1)
                assert [d.path for d in invalid.value.details] == ["$.data.text"]
                with pytest.raises(ServerError) as forbidden:
                    await client.request(Chat("forbidden"))
                assert forbidden.value.code == "FORBIDDEN"
                assert await client.request(TimedPing(2.0), TimedPong) == TimedPong(2.0)


async def test_upgrade_request_and_denials(clients_for: ClientsFor) -> None:
    seen = Seen()

    async def verify(token: str) -> str | None:
        return "ada" if token == "good" else None

    route = make_route(seen).authenticate(create_token_auth(verify))
    async with clients_for(WebSocketServer([route])) as open_client:
        with trio.fail_after(TIMEOUT):
            options: ClientOptions = {"token": "good", "headers": {"x-bot": "1"}}
            async with open_client(route, "/rooms/blue?x=7", **options) as client:
                assert await client.request(TimedPing(1.0), TimedPong) == TimedPong(1.0)
            assert seen.params == [{"room": "blue"}]
            assert seen.queries == [["7"]]
            assert seen.headers == ["1"]
            with pytest.raises(ConnectionDenied) as denied:
                async with open_client(route, "/rooms/blue", token="bad"):
                    pass
            assert (denied.value.status, denied.value.code) == (401, "UNAUTHORIZED")
            with pytest.raises(ConnectionDenied) as missing:
                async with open_client(route, "/nowhere", token="good"):
                    pass
            assert (missing.value.status, missing.value.code) == (404, "NOT_FOUND")


async def test_reconnection_resumes_topics_with_history(clients_for: ClientsFor) -> None:
    route = make_route(Seen())
    server = WebSocketServer([route], history={"room:*": History(size=100, ttl=300.0)})
    reconnected = trio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    async with clients_for(server) as open_client:
        async with open_client(
            route, "/rooms/a", reconnect=FAST, on_reconnect=on_reconnect
        ) as client:
            with trio.fail_after(TIMEOUT):
                await wait_until(lambda: server.subscriber_count("room:a") == 1)
                await server.publish("room:a", Note(1))
                assert await client.receive() == Note(1)
                await server.close_all(1012, "restart")
                await server.publish("room:a", Note(2))  # while away, or already back
                await reconnected.wait()
                await wait_until(lambda: server.subscriber_count("room:a") == 1)
                await server.publish("room:a", Note(3))
                assert [await client.receive() for _ in range(2)] == [Note(2), Note(3)]
                assert client.reconnects == 1
                assert await client.request(TimedPing(3.0), TimedPong) == TimedPong(3.0)


async def test_a_server_that_goes_away_ends_iteration(clients_for: ClientsFor) -> None:
    route = make_route(Seen())
    server = WebSocketServer([route])
    async with clients_for(server) as open_client, open_client(route, "/rooms/a") as client:
        with trio.fail_after(TIMEOUT):
            await wait_until(lambda: len(server.registry) == 1)
            await server.close_all(1001, "shutdown")
            assert [msg async for msg in client] == []
            with pytest.raises(WebSocketClosed) as closed:
                await client.send(Chat("anyone?"))
            assert closed.value.code == 1001


# -- the plugin's fixtures -------------------------------------------------------------

PLUGIN_ROUTE = make_route(Seen(), "/echo")


@pytest.fixture
def ws_server() -> WebSocketServer:
    return WebSocketServer([PLUGIN_ROUTE])


async def ping_twice(open_client: ClientFactory) -> None:
    """One test body for both fixtures: the route's own path is the default."""
    async with open_client(PLUGIN_ROUTE) as client:
        with trio.fail_after(TIMEOUT):
            assert await client.request(TimedPing(1.0), TimedPong) == TimedPong(1.0)
            assert await client.request(Flood(1), TimedPong) == TimedPong(1.0)
            assert await client.receive() == Note(0)


async def test_ws_typed_client_is_in_memory(ws_typed_client: ClientFactory) -> None:
    await ping_twice(ws_typed_client)


async def test_ws_typed_live_client_is_live(ws_typed_live_client: ClientFactory) -> None:
    await ping_twice(ws_typed_live_client)
    assert repr(ws_typed_live_client).startswith("live_clients('ws://127.0.0.1:")


async def test_ws_typed_client_shares_the_ws_client(
    ws_client: TestClient, ws_typed_client: ClientFactory
) -> None:
    async with ws_client.connect("/echo") as ws, ws_typed_client(PLUGIN_ROUTE) as client:
        assert (await ws.request("ping", {"timestamp": 1.0}))["data"] == {"timestamp": 1.0}
        assert await client.request(TimedPing(2.0), TimedPong) == TimedPong(2.0)


# -- TestClient.client in particular ------------------------------------------------------


async def test_on_close_has_run_when_the_in_memory_client_is_left(
    memory_transport: TransportName,
) -> None:
    seen = Seen()
    route = make_route(seen)
    server = WebSocketServer([route])
    async with TestClient(server, transport=memory_transport) as test_client:
        async with test_client.client(route, "/rooms/a") as client:
            assert await client.request(TimedPing(1.0), TimedPong) == TimedPong(1.0)
        assert seen.closes == [1000]
        assert len(server.registry) == 0


async def test_a_test_client_need_not_be_entered() -> None:
    route = make_route(Seen())
    async with TestClient(WebSocketServer([route])).client(route, "/rooms/a") as client:
        assert await client.request(TimedPing(1.0), TimedPong) == TimedPong(1.0)
        assert client.url == "ws://testserver/rooms/a"


async def test_the_bodys_exception_comes_out_as_it_is() -> None:
    route = make_route(Seen())

    async def body() -> None:
        async with TestClient(WebSocketServer([route])) as test_client:
            async with test_client.client(route, "/rooms/a") as client:
                await client.request(TimedPing(1.0), TimedPong)
                raise LookupError("from the body")

    with pytest.raises(LookupError, match="from the body"):
        await body()


async def test_each_reconnection_is_a_new_in_memory_connection() -> None:
    seen = Seen()
    route = make_route(seen)
    server = WebSocketServer([route])
    async with TestClient(server) as test_client:
        async with test_client.client(route, "/rooms/a", reconnect=FAST) as client:
            for times in range(1, 4):
                await wait_until(lambda: len(server.registry) == 1)
                await server.close_all(1013, "again")
                await wait_until(functools.partial(lambda t: client.reconnects == t, times))
            assert await client.request(TimedPing(1.0), TimedPong) == TimedPong(1.0)
    assert seen.closes == [1013, 1013, 1013, 1000]
    assert len(seen.params) == 4


async def test_client_refuses_what_it_cannot_serve() -> None:
    route = make_route(Seen())

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        raise NotImplementedError

    with pytest.raises(TypeError, match="needs a WebSocketServer"):
        async with TestClient(asgi_app).client(route, "/rooms/a"):
            pass
    test_client = TestClient(WebSocketServer([route]))
    with pytest.raises(ValueError, match=r"path parameters \(room\): pass the path"):
        async with test_client.client(route):
            pass
    with pytest.raises(ValueError, match="must start with '/'"):
        async with test_client.client(route, "rooms/a"):
            pass
    with pytest.raises(ValueError, match="path parameters"):
        live_clients("ws://127.0.0.1:9")(route)


def test_client_options_are_connects_options() -> None:
    parameters = inspect.signature(connect).parameters
    options = ClientOptions.__annotations__
    assert set(parameters) - set(options) == {"url", "route", "ssl_context", "proxy"}
    for name, annotation in options.items():
        assert parameters[name].annotation == annotation.__forward_arg__, name


def test_public_names_are_documented() -> None:
    for name in trio_wsroutes.testing.__all__:
        value = getattr(trio_wsroutes.testing, name)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue  # TransportName: a type alias, documented where it is defined
        assert inspect.getdoc(value), name
        for attr, member in vars(value).items():
            if callable(member) and not attr.startswith("_"):
                assert inspect.getdoc(member), f"{name}.{attr}"


# -- TestConnection.request ---------------------------------------------------------------


@pytest.fixture
def hanging() -> tuple[WebSocketServer, Seen]:
    seen = Seen()
    return WebSocketServer([make_route(seen, "/t")]), seen


async def test_request_keeps_other_messages_for_receive_in_order(
    memory_transport: TransportName, hanging: tuple[WebSocketServer, Seen]
) -> None:
    server, _ = hanging
    async with (
        TestClient(server, transport=memory_transport) as client,
        client.connect("/t") as ws,
    ):
        await ws.send("chat", {"text": "before"})
        reply = await ws.request("flood", {"n": 3})
        assert reply == {"type": "pong", "data": {"timestamp": 3.0}, "id": "req-1"}
        received = [await ws.receive() for _ in range(4)]
        assert [m["type"] for m in received] == ["said", "note", "note", "note"]
        assert [m["data"].get("n") for m in received[1:]] == [0, 1, 2]


async def test_request_returns_the_ack_or_the_error(
    memory_transport: TransportName, hanging: tuple[WebSocketServer, Seen]
) -> None:
    server, _ = hanging
    async with (
        TestClient(server, transport=memory_transport) as client,
        client.connect("/t") as ws,
    ):
        assert await ws.request("quiet") == {"type": "ack", "id": "req-1"}
        error = await ws.request("chat", {"text": "forbidden"})
        assert (error["type"], error["code"], error["id"]) == ("error", "FORBIDDEN", "req-2")
        invalid = await ws.request("ping", {"timestamp": "soon"})
        assert (invalid["code"], invalid["id"]) == ("VALIDATION_ERROR", "req-3")


async def test_a_request_timeout_names_the_id_and_what_arrived(
    memory_transport: TransportName, hanging: tuple[WebSocketServer, Seen]
) -> None:
    server, seen = hanging
    async with (
        TestClient(server, transport=memory_transport) as client,
        client.connect("/t") as ws,
    ):
        with pytest.raises(RequestTimeout) as timed_out:
            await ws.request("hang", timeout=0.2)
        error = timed_out.value
        assert error.id == "req-1"
        assert error.timeout == 0.2
        assert error.received == ('{"type":"note","data":{"n":-1}}',)
        assert str(error) == (
            "no reply to request 'req-1' within 0.2 s; 1 other frame arrived meanwhile: 'note'"
        )
        assert isinstance(error, ClientRequestTimeout)
        assert isinstance(error, TimeoutError)
        assert isinstance(error, trio.TooSlowError)  # what request() raised before
        # What arrived meanwhile is still there; the late answer is dropped.
        assert (await ws.receive())["data"] == {"n": -1}
        seen.release.set()
        assert (await ws.request("ping", {"timestamp": 2.0}))["id"] == "req-2"
        await ws.send("chat", {"text": "after"})
        assert (await ws.receive())["type"] == "said"


async def test_a_request_timeout_says_when_nothing_arrived(
    hanging: tuple[WebSocketServer, Seen],
) -> None:
    server, seen = hanging
    async with TestClient(server) as client, client.connect("/t") as ws:
        await ws.send("hang")
        assert (await ws.receive())["type"] == "note"
        with pytest.raises(RequestTimeout, match=r"'req-1' within 0\.1 s; nothing arrived"):
            await ws.request("ping", {"timestamp": 1.0}, timeout=0.1)  # behind the hang
        seen.release.set()


async def test_a_request_timeout_is_not_wrapped_in_an_exception_group(
    memory_transport: TransportName, hanging: tuple[WebSocketServer, Seen]
) -> None:
    server, _ = hanging
    with pytest.raises(RequestTimeout, match="req-1"):
        async with (
            TestClient(server, transport=memory_transport) as client,
            client.connect("/t") as ws,
        ):
            await ws.request("hang", timeout=0.1)


async def test_concurrent_requests_and_a_receiver_each_get_their_own(
    memory_transport: TransportName, hanging: tuple[WebSocketServer, Seen]
) -> None:
    server, _ = hanging
    replies: dict[int, float] = {}
    said: list[str] = []
    async with (
        TestClient(server, transport=memory_transport) as client,
        client.connect("/t") as ws,
    ):

        async def one(n: int) -> None:
            replies[n] = (await ws.request("ping", {"timestamp": float(n)}))["data"]["timestamp"]

        async def receiver() -> None:
            for _ in range(10):
                said.append((await ws.receive())["data"]["text"])

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receiver)
                for n in range(10):
                    nursery.start_soon(one, n)
                    await ws.send("chat", {"text": f"m{n}"})
    assert replies == {n: float(n) for n in range(10)}
    assert said == [f"m{n}" for n in range(10)]


async def test_a_request_ends_when_the_server_closes(
    memory_transport: TransportName, hanging: tuple[WebSocketServer, Seen]
) -> None:
    server, _ = hanging
    async with (
        TestClient(server, transport=memory_transport) as client,
        client.connect("/t") as ws,
    ):

        async def shut_down() -> None:
            await wait_until(lambda: len(server.registry) == 1)
            await trio.testing.wait_all_tasks_blocked()
            await server.close_all(1012, "restart")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(shut_down)
            with pytest.raises(trio_wsroutes.testing.WebSocketClosed) as closed:
                await ws.request("hang")
        assert closed.value.code == 1012
        assert "request 'req-1' got no answer" in (closed.value.__notes__ or [])
        # The frame that came first is still there, then the close.
        assert (await ws.receive())["data"] == {"n": -1}
        assert await ws.wait_closed() == 1012


async def test_test_connections_raise_the_clients_exceptions(
    memory_transport: TransportName,
) -> None:
    """One set of exception classes in memory and live: what a test catches around
    ``TestClient.connect`` is what it catches around ``client.connect``."""
    assert trio_wsroutes.testing.ConnectionDenied is ConnectionDenied
    assert trio_wsroutes.testing.WebSocketClosed is WebSocketClosed

    async def close_at_once(ws: Connection[Any], ctx: Context[Any]) -> None:
        await ws.close(4001, "bye")

    route = create_websocket_route("/closing")
    route.on_connect(close_at_once)
    server = WebSocketServer([route])
    async with TestClient(server, transport=memory_transport) as client:
        with pytest.raises(ConnectionDenied) as denied:
            async with client.connect("/nowhere"):
                pass
        assert (denied.value.status, denied.value.code) == (404, "NOT_FOUND")
        assert denied.value.message == "Not Found"
        assert denied.value.json() == {"message": "Not Found", "code": "NOT_FOUND"}
        assert denied.value.header("Content-Type") == "application/json"
        async with client.connect("/closing") as ws:
            with pytest.raises(WebSocketClosed) as closed:
                await ws.receive()
            assert (closed.value.code, closed.value.reason) == (4001, "bye")
