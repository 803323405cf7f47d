"""Presence with the in-memory broker, over real sockets on both transports: who is in a
topic, how many, join and leave events once per user, what a connection may see, and the
bounds (info size, entries listed, memory)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.conftest import ServeLive, wait_until
from tests.presence_app import (
    Hello,
    Marker,
    Out,
    People,
    Seat,
    Sub,
    Who,
    make_server,
    open_route,
    room_route,
)
from trio_wsroutes import (
    Connection,
    Context,
    MemoryBroker,
    Presence,
    PresenceEntry,
    PresenceJoin,
    PresenceLeave,
    PresencePolicy,
    PresenceStats,
    WebSocketServer,
    create_websocket_route,
    generate_websocket_types,
    message,
)
from trio_wsroutes._client_messages import route_types
from trio_wsroutes._messages import encode_message
from trio_wsroutes.client import Client, ServerError, connect

TIMEOUT = 10


def client(url: str, route: Any, **options: Any) -> Client[Out, Any]:
    options.setdefault("proxy", False)
    options.setdefault("request_timeout", TIMEOUT)
    options.setdefault("open_timeout", TIMEOUT)
    return connect(url, route, **options)


class Room:
    """Clients of one server's ``/room/a`` (and ``/open/a``), each entered in ``stack``."""

    def __init__(self, stack: AsyncExitStack, base: str) -> None:
        self.stack = stack
        self.base = base
        self.route = room_route()

    async def enter(self, user: str | None, room: str = "a") -> Client[Out, Any]:
        """Connect as ``user`` (anonymous on ``/open``) and wait for the hello, which
        comes after the connection is listed (and after its own join event)."""
        if user is None:
            ws = client(f"{self.base}/open/{room}", open_route())
        else:
            ws = client(f"{self.base}/room/{room}", self.route, token=user)
        await self.stack.enter_async_context(ws)
        while not isinstance(await ws.receive(), Hello):
            pass
        return ws


@asynccontextmanager
async def room(serve_live: ServeLive, server: WebSocketServer) -> AsyncIterator[Room]:
    async with serve_live(server) as address, AsyncExitStack() as stack:
        yield Room(stack, address.ws_url)


async def no_presence_event_before(ws: Client[Out, Any], server: WebSocketServer, n: int) -> None:
    """Publish a marker on ``room:a``: the next message ``ws`` gets must be that marker
    (the memory broker delivers in publish order, so an event sent before would come
    first)."""
    await server.publish("room:a", Marker(n))
    assert await ws.receive() == Marker(n)


def seat_of(user: str) -> dict[str, str]:
    return {"name": f"seat of {user}"}


# -- lists and counts -----------------------------------------------------------------------


async def test_presence_lists_and_counts_every_connection(serve_live: ServeLive) -> None:
    server = make_server()
    baseline = server.memory.used
    with trio.fail_after(TIMEOUT):
        async with room(serve_live, server) as r:
            alice1 = await r.enter("alice")
            alice2 = await r.enter("alice")
            bob = await r.enter("bob")
            await r.enter(None)
            await r.enter(None)
            ids = {c.id for c in server.registry.all() if c.path == "/room/:room"}

            entries = await server.presence("room:a")
            assert {e.connection_id for e in entries} == ids
            assert sorted(str(e.user_id) for e in entries) == ["alice", "alice", "bob"]
            assert all(e.info == seat_of(str(e.user_id)) for e in entries)
            assert entries[0].info_as(Seat) == Seat(f"seat of {entries[0].user_id}")
            assert await server.presence_stats("room:a") == PresenceStats(clients=3, users=2)
            # Anonymous connections: listed without a user id, each a user of its own.
            anonymous = await server.presence("open:a")
            assert [e.user_id for e in anonymous] == [None, None]
            assert await server.presence_stats("open:a") == PresenceStats(clients=2, users=2)
            # The same from a handler (ws.presence, ws.presence_stats).
            people = await bob.request(Who("room:a"), People)
            assert people == People(user_ids=["alice", "alice", "bob"], clients=3, users=2)
            # Entries cost memory, counted in the budget.
            assert server.broker.presence_bytes > 0  # type: ignore[attr-defined]

            await bob.close()
            await wait_until(lambda: len(server.registry) == 4)
            assert await server.presence_stats("room:a") == PresenceStats(clients=2, users=1)
            assert {e.user_id for e in await server.presence("room:a")} == {"alice"}
            await alice1.close()
            await alice2.close()
            await wait_until(lambda: len(server.registry) == 2)
            assert await server.presence("room:a") == []
            assert await server.presence_stats("room:a") == PresenceStats(0, 0)
        await wait_until(lambda: len(server.registry) == 0)
        assert server.broker.presence_bytes == 0  # type: ignore[attr-defined]
        assert server.memory.used == baseline


async def test_unsubscribe_unlists_and_resubscribe_lists_again(serve_live: ServeLive) -> None:
    server = make_server()
    route = create_websocket_route("/r").server_messages(Hello)

    @route.on_connect
    async def connected(ws: Connection[Hello], ctx: Context[None]) -> None:
        await ws.subscribe("open:x")
        assert [e.connection_id for e in await server.presence("open:x")] == [ws.id]
        await ws.unsubscribe("open:x")
        assert await server.presence_stats("open:x") == PresenceStats(0, 0)
        await ws.subscribe("open:x")
        await ws.subscribe("open:x")  # already: nothing more
        assert await server.presence_stats("open:x") == PresenceStats(1, 1)
        await ws.send(Hello(pid=0))

    server = WebSocketServer([route], presence={"open:*": Presence()})
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            async with client(address.ws_url + "/r", route) as ws:
                assert await ws.receive() == Hello(pid=0)
            await wait_until(lambda: len(server.registry) == 0)
            assert await server.presence_stats("open:x") == PresenceStats(0, 0)


# -- events -----------------------------------------------------------------------------------


async def test_join_and_leave_events_come_once_per_user(serve_live: ServeLive) -> None:
    server = make_server()
    with trio.fail_after(TIMEOUT):
        async with room(serve_live, server) as r:
            carol = await r.enter("carol")
            alice1 = await r.enter("alice")
            assert await carol.receive() == PresenceJoin("room:a", "alice", seat_of("alice"))
            # Alice's second connection: no second join.
            alice2 = await r.enter("alice")
            await no_presence_event_before(carol, server, 1)
            assert await alice1.receive() == Marker(1)
            assert await alice2.receive() == Marker(1)
            # Her first connection goes: she is still there, no leave.
            await alice1.close()
            await wait_until(lambda: len(server.registry) == 2)
            await no_presence_event_before(carol, server, 2)
            # Her last one goes: one leave.
            await alice2.close()
            assert await carol.receive() == PresenceLeave("room:a", "alice", seat_of("alice"))
            await no_presence_event_before(carol, server, 3)
            # Anonymous connections come and go as users of their own.
            await r.enter(None)
            await wait_until(lambda: len(server.registry) == 2)


async def test_events_on_the_wire_and_on_a_topic_with_history(serve_live: ServeLive) -> None:
    server = make_server()
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            base = f"{address.ws_url}/room/a?token="
            async with open_websocket_url(base + "dora") as dora:
                # Her own join is not sent to her: she knows.
                assert orjson.loads(await dora.get_message())["type"] == "hello"
                async with open_websocket_url(base + "eve") as eve:
                    assert await dora.get_message() == (
                        '{"type":"presence_join","topic":"room:a",'
                        '"data":{"user_id":"eve","info":{"name":"seat of eve"}}}'
                    )
                    assert orjson.loads(await eve.get_message())["type"] == "hello"
                    await eve.send_message('{"type":"sub","data":{"topic":"kept:x"},"id":1}')
                    assert orjson.loads(await eve.get_message()) == {"type": "ack", "id": 1}
                    await dora.send_message('{"type":"sub","data":{"topic":"kept:x"},"id":2}')
                    # On a topic with history, the event is a publication like any: with
                    # its position, and "topic" once.
                    raw = await eve.get_message()
                    assert raw.count('"topic"') == 1
                    event = orjson.loads(raw)
                    assert event["type"] == "presence_join"
                    assert event["topic"] == "kept:x"
                    # Eve's own join was published (offset 1) but not sent to her.
                    assert event["offset"] == 2
                    assert event["data"] == {"user_id": "dora", "info": {"name": "seat of dora"}}
                    page = await server.history("kept:x")
                    assert [p.position.offset for p in page.publications] == [1, 2]
                    assert page.publications[1].payload == raw.encode()
                    assert orjson.loads(await dora.get_message()) == {"type": "ack", "id": 2}
                # Eve's leaves, one per topic (in either order).
                leaves = sorted([await dora.get_message(), await dora.get_message()])
                assert leaves[1] == (
                    '{"type":"presence_leave","topic":"room:a",'
                    '"data":{"user_id":"eve","info":{"name":"seat of eve"}}}'
                )
                assert orjson.loads(leaves[0])["type"] == "presence_leave"
                assert '"topic":"kept:x","offset":3' in leaves[0]


# -- who may see what ----------------------------------------------------------------------------


async def test_authorize_subscribe_governs_what_a_connection_sees(serve_live: ServeLive) -> None:
    server = make_server()
    with trio.fail_after(TIMEOUT):
        async with room(serve_live, server) as r:
            await r.enter("alice", room="b")
            bob = await r.enter("bob")
            # Not subscribed to room:b, but allowed to: visible.
            people = await bob.request(Who("room:b"), People)
            assert people == People(user_ids=["alice"], clients=1, users=1)
            # secret:* is refused by the route's authorize_subscribe: neither subscribing
            # nor seeing who is there.
            with pytest.raises(ServerError) as refused:
                await bob.request(Sub("secret:x"), People)
            assert refused.value.code == "FORBIDDEN_TOPIC"
            with pytest.raises(ServerError) as hidden:
                await bob.request(Who("secret:x"), People)
            assert hidden.value.code == "FORBIDDEN_TOPIC"
            with pytest.raises(ServerError) as invalid:
                await bob.request(Who(""), People)
            assert invalid.value.code == "INVALID_TOPIC"
            # The server itself sees everything.
            assert await server.presence("secret:x") == []


# -- bounds ---------------------------------------------------------------------------------------


async def test_an_info_over_max_info_bytes_is_refused_at_subscribe(
    serve_live: ServeLive, caplog: pytest.LogCaptureFixture
) -> None:
    route = create_websocket_route("/r").server_messages(Hello)

    @route.on_connect
    async def connected(ws: Connection[Hello], ctx: Context[None]) -> None:
        try:
            await ws.subscribe("big:x")
        except ValueError as exc:
            assert "max_info_bytes=64" in str(exc)
            await ws.send(Hello(pid=len(ws.topics)))
        await ws.subscribe("fine:x")
        await ws.send(Hello(pid=len(ws.topics)))

    server = WebSocketServer(
        [route],
        presence={
            "big:*": Presence(info=lambda ctx: Seat("x" * 100), max_info_bytes=64),
            "fine:*": Presence(info=lambda ctx: Seat("x" * 40), max_info_bytes=64),
        },
    )
    caplog.set_level(logging.WARNING, "trio_wsroutes")
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            async with client(address.ws_url + "/r", route) as ws:
                # Refused before anything: not subscribed, not listed.
                assert await ws.receive() == Hello(pid=0)
                assert await ws.receive() == Hello(pid=1)
            assert await server.presence_stats("big:x") == PresenceStats(0, 0)
            assert server.subscriber_count("big:x") == 0
    assert any("max_info_bytes=64" in r.getMessage() for r in caplog.records)


async def test_an_info_error_in_a_handler_tells_the_client_nothing(serve_live: ServeLive) -> None:
    route = create_websocket_route("/r").server_messages(Hello)

    @route.on_connect
    async def connected(ws: Connection[Hello], ctx: Context[None]) -> None:
        await ws.subscribe("big:x")

    server = WebSocketServer(
        [route], presence={"big:*": Presence(info=lambda ctx: Seat("x" * 100), max_info_bytes=64)}
    )
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            async with open_websocket_url(address.ws_url + "/r") as ws:
                error = orjson.loads(await ws.get_message())
                assert error["code"] == "INTERNAL_ERROR"
                assert "max_info_bytes" not in str(error) and "64" not in str(error)


async def test_max_entries_lists_the_first_and_counts_everyone(
    serve_live: ServeLive, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server()
    caplog.set_level(logging.WARNING, "trio_wsroutes")
    with trio.fail_after(TIMEOUT):
        async with room(serve_live, server) as r:
            clients = [await r.enter(name) for name in ("u1", "u2", "u3", "u4")]
            for ws in clients:
                await ws.send(Sub("big:x"))
            while (stats := await server.presence_stats("big:x")).clients < 4:  # noqa: ASYNC110
                await trio.sleep(0.01)
            assert stats == PresenceStats(clients=4, users=4)
            assert len(await server.presence("big:x")) == 2
    over = [r for r in caplog.records if "max_entries=2" in r.getMessage()]
    assert len(over) == 1 and "big:x" in over[0].getMessage()


# -- definitions, options, the Python client ----------------------------------------------------


def test_presence_options_are_checked() -> None:
    for bad in (
        {"ttl": 0},
        {"ttl": 0.5},
        {"ttl": float("inf")},
        {"ttl": True},
        {"max_entries": -1},
        {"max_info_bytes": 2},
    ):
        with pytest.raises(ValueError):
            Presence(**bad)
    with pytest.raises(TypeError):
        Presence(info="seat")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Presence(events=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        WebSocketServer(presence={"room:*": History_like()})  # type: ignore[dict-item]
    policy = PresencePolicy({"room:*": Presence(events=True), "*": Presence()})
    assert policy.match("room:a") == Presence(events=True)
    assert policy.match("other") == Presence()
    assert PresencePolicy.coerce({}) is None
    broker = MemoryBroker()
    broker.configure_presence(policy)
    broker.configure_presence(PresencePolicy(policy.rules))  # equal: nothing to do
    with pytest.raises(RuntimeError):
        broker.configure_presence(PresencePolicy({"*": Presence()}))


def History_like() -> object:
    return object()


async def test_a_server_without_presence_says_so() -> None:
    server = WebSocketServer([])
    with pytest.raises(ValueError, match="no presence"):
        await server.presence("room:a")
    server = make_server()
    with pytest.raises(ValueError, match="no presence"):
        await server.presence_stats("elsewhere")


def test_presence_types_are_reserved_and_sent_by_the_server_only() -> None:
    for reserved in ("presence_join", "presence_leave"):
        with pytest.raises(ValueError):
            message(reserved)
        with pytest.raises(ValueError):
            create_websocket_route("/x").on(reserved, Seat, lambda ws, data, ctx: None)
    with pytest.raises(TypeError, match="sent by the server"):
        encode_message(PresenceJoin("room:a", "u", None))


def test_the_python_client_decodes_presence_events_on_any_route() -> None:
    # A route that does not declare them: decoded all the same.
    plain = route_types(create_websocket_route("/plain").server_messages(Hello))
    raw = '{"type":"presence_leave","topic":"t","data":{"user_id":7,"info":null}}'
    assert plain.decode_message(orjson.loads(raw), raw) == PresenceLeave("t", 7, None)
    for bad in (
        '{"type":"presence_join","data":{"user_id":"u","info":null}}',
        '{"type":"presence_join","topic":"t","data":{"user_id":1.5,"info":null}}',
        '{"type":"presence_join","topic":"t","data":[]}',
    ):
        with pytest.raises(Exception, match="invalid 'presence_join'"):
            plain.decode_message(orjson.loads(bad), bad)


def test_generated_types_describe_presence_events_for_every_route_of_the_server() -> None:
    text = generate_websocket_types(make_server())
    assert "export interface WebSocketPresenceJoinMessage" in text
    for namespace in ("RoomWebSocket", "OpenWebSocket"):
        body = text[text.index(f"export namespace {namespace}") :]
        union = body[body.index("ServerMessage =") : body.index("ClientData")]
        assert "WebSocketPresenceJoinMessage" in union and "WebSocketPresenceLeaveMessage" in union
        data = body[body.index("interface ServerData") :]
        assert "presence_join: WebSocketPresence<Seat>;" in data.split("}")[0]
    # Without events, and without declaring them, a route's types do not mention them.
    quiet = create_websocket_route("/q").server_messages(Hello)
    assert "Presence" not in generate_websocket_types(
        WebSocketServer([quiet], presence={"*": Presence()})
    )


def test_entries_are_decoded_into_plain_values() -> None:
    entry = PresenceEntry("c1", "u", {"name": "n"})
    assert entry.info_as(Seat) == Seat("n")
    assert attrs.asdict(PresenceStats(1, 1)) == {"clients": 1, "users": 1}


def test_generated_presence_types_compile_against_the_events_on_the_wire(tmp_path: Path) -> None:
    from tests import _typescript
    from tests.test_typegen_tsc import STRICT
    from trio_wsroutes._envelope import with_position
    from trio_wsroutes._history import Position
    from trio_wsroutes._presence import event_frame

    (tmp_path / "websocket-types.ts").write_text(generate_websocket_types(make_server()))
    seat = orjson.dumps({"name": "seat of u"})
    frames = [
        event_frame("presence_join", "room:a", b'"u"', seat, with_topic=True),
        event_frame("presence_leave", "room:a", b"7", b"null", with_topic=True),
    ]
    positioned = with_position(
        event_frame("presence_join", "kept:x", b"null", seat, with_topic=False).payload,
        "kept:x",
        Position("e1", 3),
    )
    assert positioned is not None
    wire = [orjson.loads(f.payload) for f in frames] + [orjson.loads(positioned)]
    (tmp_path / "sample.ts").write_text(
        'import type { RoomWebSocket } from "./websocket-types.js";\n'
        f"export const wire: RoomWebSocket.ServerMessage[] = {orjson.dumps(wire).decode()};\n"
        "export function seatOf(m: RoomWebSocket.ServerMessage): string | undefined {\n"
        '  if (m.type === "presence_join" || m.type === "presence_leave") {\n'
        "    const topic: string = m.topic;\n"
        "    return m.data.info === null ? topic : m.data.info.name;\n"
        "  }\n"
        "  return undefined;\n"
        "}\n"
        "export const data: RoomWebSocket.ServerData['presence_join'] = "
        '{ user_id: null, info: { name: "n" } };\n'
    )
    (tmp_path / "bad.ts").write_text(
        'import type { RoomWebSocket } from "./websocket-types.js";\n'
        "export const bad: RoomWebSocket.ServerData['presence_leave'] = "
        "{ user_id: 1, info: { nope: 1 } };\n"
    )
    status, diagnostics, output = _typescript.tsc(
        *STRICT, "websocket-types.ts", "sample.ts", "bad.ts", cwd=tmp_path
    )
    assert status != 0
    assert [(d.file, d.line) for d in diagnostics] == [("bad.ts", 2)], output


def test_json_schema_and_asyncapi_describe_presence_events() -> None:
    import jsonschema

    from tests import _typescript
    from trio_wsroutes import generate_asyncapi, generate_json_schema

    document = orjson.loads(generate_json_schema(make_server()))
    defs = document["$defs"]
    union = defs["RoomWebSocketServerMessage"]["oneOf"]
    assert {"$ref": "#/$defs/WebSocketPresenceJoinMessage"} in union
    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/$defs/RoomWebSocketServerMessage", "$defs": defs}
    )
    event = {"type": "presence_join", "topic": "room:a", "data": {"user_id": "u", "info": None}}
    assert validator.is_valid(event)
    assert validator.is_valid({**event, "offset": 3, "epoch": "e1"})
    assert not validator.is_valid({**event, "topic": None})
    asyncapi = orjson.loads(generate_asyncapi(make_server(), format="json"))
    assert "server.presence_leave" in asyncapi["channels"]["RoomWebSocket"]["messages"]
    assert "RoomWebSocket.send.presence_join" in asyncapi["operations"]
    _typescript.require(_typescript.ASYNCAPI_SCHEMA)
    official = jsonschema.Draft7Validator(orjson.loads(_typescript.ASYNCAPI_SCHEMA.read_bytes()))
    assert [e.message for e in official.iter_errors(asyncapi)] == []
