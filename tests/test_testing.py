"""``trio_wsroutes.testing``: ``TestConnection.request``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import attrs
import pytest
import trio
import trio.testing

import trio_wsroutes.testing
from trio_wsroutes import (
    Connection,
    Context,
    MessageError,
    WebSocketRoute,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes.client import RequestTimeout as ClientRequestTimeout
from trio_wsroutes.testing import RequestTimeout, TestClient, TransportName

TIMEOUT = 10


# -- the routes ---------------------------------------------------------------------


@attrs.frozen
class Ping:
    timestamp: float


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


@message("pong")
@attrs.frozen
class Pong:
    timestamp: float


@message("note")
@attrs.frozen
class Note:
    n: int


@message("said")
@attrs.frozen
class Said:
    text: str


Out = Pong | Note | Said


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
        Pong, Note, Said
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

    @route.on("ping", Ping)
    async def ping(ws: Connection[Out], data: Ping, ctx: Context[None]) -> Pong:
        return Pong(data.timestamp)

    @route.on("chat", Chat)
    async def chat(ws: Connection[Out], data: Chat, ctx: Context[None]) -> None:
        if data.text == "forbidden":
            raise MessageError("Not here", code="FORBIDDEN")
        await ws.send(Said(data.text))

    @route.on("flood", Flood)
    async def flood(ws: Connection[Out], data: Flood, ctx: Context[None]) -> Pong:
        for n in range(data.n):
            await ws.send(Note(n))
        return Pong(float(data.n))

    @route.on("quiet", Quiet)
    async def quiet(ws: Connection[Out], data: Quiet, ctx: Context[None]) -> None:
        return None

    @route.on("hang", Hang)
    async def hang(ws: Connection[Out], data: Hang, ctx: Context[None]) -> Pong:
        await ws.send(Note(-1))
        await seen.release.wait()
        return Pong(-1.0)

    return route


async def wait_until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(TIMEOUT):
        while not predicate():  # noqa: ASYNC110 - polls state owned by other tasks
            await trio.sleep(0.005)


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
