"""Integration tests: the server under a real server, real clients.

Each test runs under hypercorn's trio worker and under the native transport (the
``serve_live`` fixture). Clients are trio-websocket (a real RFC 6455 client over TCP),
hand-written HTTP/1.1 requests parsed with h11, and, for frames no sane client sends, a
raw TCP stream.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import h11
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Route
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from tests._messages import TimedPing, TimedPong
from tests._rawws import CLOSE, TEXT, raw_connect
from tests.conftest import xfail_on
from trio_wsroutes import (
    BoundAddress,
    Connection,
    Context,
    Reject,
    Request,
    WebSocketRoute,
    WebSocketServer,
    create_websocket_route,
    message,
)

ServeLive = Callable[[WebSocketServer], AbstractAsyncContextManager[BoundAddress]]

TIMEOUT = 10


# -- messages -------------------------------------------------------------------------


@attrs.frozen
class Say:
    text: str = attrs.field(validator=attrs.validators.min_len(1))
    include_self: bool = False


@attrs.frozen
class Empty:
    pass


@message("where")
@attrs.frozen
class Where:
    route: str
    room_id: str | None
    chat_id: str


@message("note")
@attrs.frozen
class Note:
    text: str


@message("ready")
@attrs.frozen
class Ready:
    topic: str


@message("sent")
@attrs.frozen
class Ack:
    recipients: int


@message("me")
@attrs.frozen
class Me:
    name: str


# -- helpers --------------------------------------------------------------------------


def connect(address: BoundAddress, path: str) -> AbstractAsyncContextManager[WebSocketConnection]:
    return open_websocket_url(
        address.ws_url + path, connect_timeout=TIMEOUT, disconnect_timeout=TIMEOUT
    )


async def send(ws: WebSocketConnection, type: str, data: Any = None, id: Any = None) -> None:
    envelope: dict[str, Any] = {"type": type}
    if data is not None:
        envelope["data"] = data
    if id is not None:
        envelope["id"] = id
    await ws.send_message(json.dumps(envelope))


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(TIMEOUT):
        raw = await ws.get_message()
    assert isinstance(raw, str)
    value = json.loads(raw)
    assert isinstance(value, dict)
    return value


async def expect_close(ws: WebSocketConnection) -> int:
    """Wait for the server's close frame (no further messages allowed); its code."""
    reason: CloseReason | None = None
    try:
        with trio.fail_after(TIMEOUT):
            extra = await ws.get_message()
    except ConnectionClosed as closed:
        reason = closed.reason
    else:
        pytest.fail(f"expected the connection to close, got message {extra!r}")
    assert reason is not None
    return reason.code


async def ping(ws: WebSocketConnection, request_id: str = "p") -> None:
    await send(ws, "ping", {"timestamp": 2.5}, id=request_id)
    assert await receive(ws) == {"type": "pong", "data": {"timestamp": 2.5}, "id": request_id}


async def rejection(address: BoundAddress, path: str) -> ConnectionRejected:
    with trio.fail_after(TIMEOUT), pytest.raises(ConnectionRejected) as rejected:
        async with connect(address, path):
            pytest.fail(f"the upgrade to {path} was accepted")
    return rejected.value


def header(headers: Any, name: str) -> str | None:
    wanted = name.lower().encode()
    for key, value in headers:
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


@attrs.frozen
class HTTPResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    header_lines: list[tuple[str, str]] = attrs.field(factory=list)
    """Every header as sent, names lowercased (``headers`` keeps the last of a name)."""


async def http_get(address: BoundAddress, path: str) -> HTTPResponse:
    """A real HTTP/1.1 GET over TCP (``Connection: close``), parsed with h11."""
    client = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=path,
        headers=[("Host", f"{address.host}:{address.port}"), ("Connection", "close")],
    )
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with stream:
            await stream.send_all(client.send(request) + client.send(h11.EndOfMessage()))
            status = 0
            lines: list[tuple[str, str]] = []
            body = bytearray()
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(await stream.receive_some())
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    lines = [(k.decode().lower(), v.decode()) for k, v in event.headers]
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
    return HTTPResponse(status, dict(lines), bytes(body), lines)


# -- a small app with one route per concern ---------------------------------------------


def echo_route() -> WebSocketRoute[None, TimedPong]:
    route = create_websocket_route("/echo").server_messages(TimedPong)

    @route.on("ping", TimedPing)
    async def on_ping(ws: Connection[TimedPong], data: TimedPing, ctx: Context[None]) -> TimedPong:
        return TimedPong(timestamp=data.timestamp)

    return route


# -- envelopes --------------------------------------------------------------------------


async def test_round_trip_and_validation_error_keep_connection_open(
    serve_live: ServeLive,
) -> None:
    async with (
        serve_live(WebSocketServer([echo_route()])) as address,
        connect(address, "/echo") as ws,
    ):
        await send(ws, "ping", {"timestamp": 1.5}, id="abc")
        assert await receive(ws) == {"type": "pong", "data": {"timestamp": 1.5}, "id": "abc"}

        await send(ws, "ping", {"timestamp": "soon"}, id=7)
        error = await receive(ws)
        assert error["type"] == "error"
        assert error["code"] == "VALIDATION_ERROR"
        assert error["id"] == 7
        assert [d["path"] for d in error["details"]] == ["$.data.timestamp"]
        assert all(d["message"] for d in error["details"])

        # Still open: the next request is answered.
        await send(ws, "ping", {"timestamp": 3}, id="after")
        assert await receive(ws) == {"type": "pong", "data": {"timestamp": 3.0}, "id": "after"}


async def test_unmatched_path_is_denied_with_404_before_the_upgrade(
    serve_live: ServeLive,
) -> None:
    async with serve_live(WebSocketServer([echo_route()])) as address:
        rejected = await rejection(address, "/nowhere")
        assert rejected.status_code == 404
        assert json.loads(rejected.body or b"") == {"message": "Not Found", "code": "NOT_FOUND"}
        assert header(rejected.headers, "content-type") == "application/json"
        # The route that does exist still upgrades.
        async with connect(address, "/echo") as ws:
            await ping(ws)


# -- authentication on the upgrade ------------------------------------------------------


def auth_routes() -> list[WebSocketRoute[Any, Me]]:
    def returns_none(request: Request) -> None:
        return None

    async def raises(request: Request) -> str:
        raise RuntimeError("database password is hunter2")

    def rejects(request: Request) -> str:
        raise Reject(403, "Banned", "BANNED")

    def accepts(request: Request) -> str:
        return "alice"

    routes: list[WebSocketRoute[Any, Me]] = []
    for path, fn in [
        ("/auth/none", returns_none),
        ("/auth/raises", raises),
        ("/auth/reject", rejects),
        ("/auth/ok", accepts),
    ]:
        route = create_websocket_route(path).server_messages(Me).authenticate(fn)

        @route.on("whoami", Empty)
        async def whoami(ws: Connection[Me], data: Empty, ctx: Context[object]) -> Me:
            return Me(name=str(ctx.user))

        routes.append(route)
    return routes


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/auth/none", 401, {"message": "Unauthorized", "code": "UNAUTHORIZED"}),
        ("/auth/raises", 401, {"message": "Authentication failed", "code": "AUTH_ERROR"}),
        ("/auth/reject", 403, {"message": "Banned", "code": "BANNED"}),
    ],
)
async def test_authenticate_denies_the_upgrade_with_a_json_http_response(
    serve_live: ServeLive, path: str, status: int, body: dict[str, str]
) -> None:
    async with serve_live(WebSocketServer(auth_routes())) as address:
        rejected = await rejection(address, path)
        assert rejected.status_code == status
        assert rejected.body is not None
        assert json.loads(rejected.body) == body
        assert header(rejected.headers, "content-type") == "application/json"
        assert b"hunter2" not in rejected.body
        assert b"RuntimeError" not in rejected.body


async def test_authenticated_user_reaches_the_handlers(serve_live: ServeLive) -> None:
    async with (
        serve_live(WebSocketServer(auth_routes())) as address,
        connect(address, "/auth/ok") as ws,
    ):
        await send(ws, "whoami", id=1)
        assert await receive(ws) == {"type": "me", "data": {"name": "alice"}, "id": 1}


# -- routing ----------------------------------------------------------------------------


async def test_static_segment_wins_over_a_parameter(serve_live: ServeLive) -> None:
    param_route = create_websocket_route("/rooms/:room_id/chat/:chat_id").server_messages(Where)
    static_route = create_websocket_route("/rooms/lobby/chat/{chat_id}").server_messages(Where)

    @param_route.on("where", Empty)
    async def in_room(ws: Connection[Where], data: Empty, ctx: Context[None]) -> Where:
        return Where("param", ctx.params["room_id"], ctx.params["chat_id"])

    @static_route.on("where", Empty)
    async def in_lobby(ws: Connection[Where], data: Empty, ctx: Context[None]) -> Where:
        assert "room_id" not in ctx.params
        return Where("lobby", None, ctx.params["chat_id"])

    # Registered parameter-first, so a first-match router would pick the wrong one.
    server = WebSocketServer([param_route, static_route])
    async with serve_live(server) as address:
        cases = [
            ("/rooms/lobby/chat/7", {"route": "lobby", "room_id": None, "chat_id": "7"}),
            ("/rooms/kitchen/chat/9", {"route": "param", "room_id": "kitchen", "chat_id": "9"}),
            ("/rooms/lobbyist/chat/1", {"route": "param", "room_id": "lobbyist", "chat_id": "1"}),
        ]
        for path, expected in cases:
            async with connect(address, path) as ws:
                await send(ws, "where", id=path)
                assert await receive(ws) == {"type": "where", "data": expected, "id": path}
        rejected = await rejection(address, "/rooms/lobby/chat")
        assert rejected.status_code == 404


# -- HTTP beside WebSocket --------------------------------------------------------------


@pytest.mark.transports("hypercorn")  # the native transport serves WebSocket only
async def test_http_app_and_websockets_share_one_port(serve_live: ServeLive) -> None:
    async def health(request: StarletteRequest) -> JSONResponse:
        return JSONResponse({"status": "ok", "path": request.url.path})

    starlette_app = Starlette(routes=[Route("/api/health", health)])
    server = WebSocketServer([echo_route()], http_app=starlette_app)
    async with serve_live(server) as address:
        response = await http_get(address, "/api/health")
        assert response.status == 200
        assert response.headers["content-type"] == "application/json"
        assert json.loads(response.body) == {"status": "ok", "path": "/api/health"}

        missing = await http_get(address, "/api/missing")
        assert missing.status == 404  # Starlette's own 404

        async with connect(address, "/echo") as ws:
            await ping(ws)


async def test_plain_http_request_is_404_or_426_without_http_app(
    serve_live: ServeLive, transport: str
) -> None:
    async with serve_live(WebSocketServer([echo_route()])) as address:
        assert (await http_get(address, "/nowhere")).status == 404
        response = await http_get(address, "/echo")
        if transport == "hypercorn":
            assert response.status == 404  # no http_app to answer it
        else:
            # A route's path says how to talk to it.
            assert response.status == 426
            assert response.headers["upgrade"].lower() == "websocket"
            # Upgrade is hop-by-hop, and the connection ends after the answer: one
            # Connection header says both.
            connection = [value for name, value in response.header_lines if name == "connection"]
            assert [value.lower() for value in connection] == ["upgrade, close"]
            assert json.loads(response.body)["code"] == "UPGRADE_REQUIRED"
        async with connect(address, "/echo") as ws:
            await ping(ws)


# -- failures stay on their connection --------------------------------------------------


async def test_handler_crash_closes_1011_and_other_connections_keep_working(
    serve_live: ServeLive,
) -> None:
    route = create_websocket_route("/crashy").server_messages(TimedPong)

    @route.on("boom", Empty)
    async def boom(ws: Connection[TimedPong], data: Empty, ctx: Context[None]) -> None:
        raise RuntimeError("secret-internal-detail")

    @route.on("ping", TimedPing)
    async def on_ping(ws: Connection[TimedPong], data: TimedPing, ctx: Context[None]) -> TimedPong:
        return TimedPong(timestamp=data.timestamp)

    async with (
        serve_live(WebSocketServer([route])) as address,
        connect(address, "/crashy") as doomed,
        connect(address, "/crashy") as survivor,
    ):
        await ping(doomed)
        await ping(survivor)

        await send(doomed, "boom", id="b1")
        error = await receive(doomed)
        assert error["type"] == "error"
        assert error["code"] == "INTERNAL_ERROR"
        assert error["id"] == "b1"
        assert "secret" not in json.dumps(error)
        assert await expect_close(doomed) == 1011

        await ping(survivor, "still-here")


# -- a frame that is not valid UTF-8, sent over a raw socket ----------------------------


def utf8_route(received: list[str]) -> WebSocketRoute[None, TimedPong]:
    route = create_websocket_route("/raw").server_messages(TimedPong)

    @route.on_text
    async def on_text(ws: Connection[TimedPong], text: str, ctx: Context[None]) -> None:
        received.append(text)

    @route.on("ping", TimedPing)
    async def on_ping(ws: Connection[TimedPong], data: TimedPing, ctx: Context[None]) -> TimedPong:
        return TimedPong(timestamp=data.timestamp)

    return route


async def test_invalid_utf8_text_frame_ends_the_connection_and_server_keeps_serving(
    serve_live: ServeLive,
) -> None:
    received: list[str] = []
    async with serve_live(WebSocketServer([utf8_route(received)])) as address:
        with trio.fail_after(TIMEOUT):
            async with raw_connect(address, "/raw") as raw:
                # A valid envelope first: the raw connection really works.
                await raw.send(TEXT, b'{"type":"ping","data":{"timestamp":1},"id":1}')
                reply = await raw.receive()
                assert reply is not None
                assert reply.opcode == TEXT
                assert json.loads(reply.payload) == {
                    "type": "pong",
                    "data": {"timestamp": 1.0},
                    "id": 1,
                }
                await raw.send(TEXT, b"\xff\xfe")
                frames = []
                while (frame := await raw.receive()) is not None:
                    frames.append(frame)
                    if frame.opcode == CLOSE:
                        break
        # Nothing but (at most) a close frame came back, and if one did it says 1007.
        assert all(frame.opcode == CLOSE for frame in frames), frames
        for frame in frames:
            assert struct.unpack("!H", frame.payload[:2])[0] == 1007
        # The bad frame never reached a handler, not even as replaced text.
        assert received == []

        async with connect(address, "/raw") as ws:
            await ping(ws)


async def test_invalid_utf8_text_frame_is_closed_with_1007(
    serve_live: ServeLive, transport: str, request: pytest.FixtureRequest
) -> None:
    xfail_on(
        request,
        transport,
        "hypercorn",
        "hypercorn 0.18 drops the TCP connection on invalid UTF-8 without sending "
        "wsproto's 1007 close frame (the app sees a 1006 disconnect)",
    )
    async with serve_live(WebSocketServer([utf8_route([])])) as address:
        with trio.fail_after(TIMEOUT):
            async with raw_connect(address, "/raw") as raw:
                await raw.send(TEXT, b"\xff\xfe")
                frame = await raw.receive()
        assert frame is not None
        assert frame.opcode == CLOSE
        assert struct.unpack("!H", frame.payload[:2])[0] == 1007


async def test_client_close_code_reaches_on_close(
    serve_live: ServeLive, transport: str, request: pytest.FixtureRequest
) -> None:
    xfail_on(
        request,
        transport,
        "hypercorn",
        "hypercorn 0.18 does not pass the client's close code to the app: "
        "websocket.disconnect always carries 1006 for a client-initiated close",
    )
    codes: list[int] = []
    closed = trio.Event()
    route = echo_route()

    @route.on_close
    async def on_close(
        ws: Connection[TimedPong], code: int, reason: str, ctx: Context[None]
    ) -> None:
        codes.append(code)
        closed.set()

    async with serve_live(WebSocketServer([route])) as address:
        async with connect(address, "/echo") as ws:
            await ping(ws)
            await ws.aclose(code=4321, reason="bye")
        with trio.fail_after(TIMEOUT):
            await closed.wait()
    assert codes == [4321]


# -- pub/sub ----------------------------------------------------------------------------


def news_route() -> WebSocketRoute[None, Note | Ready | Ack]:
    route = create_websocket_route("/news").server_messages(Note, Ready, Ack)

    @route.on_connect
    async def joined(ws: Connection[Note | Ready | Ack], ctx: Context[None]) -> None:
        await ws.subscribe("news")
        await ws.send(Ready(topic="news"))

    @route.on("say", Say)
    async def say(ws: Connection[Note | Ready | Ack], data: Say, ctx: Context[None]) -> Ack:
        count = await ws.publish("news", Note(text=data.text), include_self=data.include_self)
        return Ack(recipients=count)

    return route


async def test_publish_reaches_other_subscribers_and_skips_the_publisher(
    serve_live: ServeLive,
) -> None:
    async with (
        serve_live(WebSocketServer([news_route()])) as address,
        connect(address, "/news") as alice,
        connect(address, "/news") as bob,
    ):
        assert await receive(alice) == {"type": "ready", "data": {"topic": "news"}}
        assert await receive(bob) == {"type": "ready", "data": {"topic": "news"}}

        await send(alice, "say", {"text": "hi bob"}, id="s1")
        # The publisher's next frame is the ack, not its own note.
        assert await receive(alice) == {"type": "sent", "data": {"recipients": 1}, "id": "s1"}
        assert await receive(bob) == {"type": "note", "data": {"text": "hi bob"}}

        await send(alice, "say", {"text": "hi all", "include_self": True}, id="s2")
        assert await receive(alice) == {"type": "note", "data": {"text": "hi all"}}
        assert await receive(alice) == {"type": "sent", "data": {"recipients": 2}, "id": "s2"}
        assert await receive(bob) == {"type": "note", "data": {"text": "hi all"}}


async def test_server_publish_from_a_background_task_reaches_a_client(
    serve_live: ServeLive,
) -> None:
    server = WebSocketServer([news_route()])
    counts: list[int] = []

    async def announcer() -> None:
        counts.append(await server.publish("news", Note(text="from the background")))

    async with serve_live(server) as address, connect(address, "/news") as ws:
        assert await receive(ws) == {"type": "ready", "data": {"topic": "news"}}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer)
            assert await receive(ws) == {"type": "note", "data": {"text": "from the background"}}
        assert counts == [1]


# -- shutdown ---------------------------------------------------------------------------


async def test_graceful_shutdown_closes_clients_with_1001(transport: str) -> None:
    server = WebSocketServer([echo_route()])
    serve = server.serve if transport == "hypercorn" else server.serve_native
    stop = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                await serve("127.0.0.1", 0, shutdown_trigger=stop.wait, task_status=task_status)

            addresses: list[BoundAddress] = await nursery.start(run)
            async with connect(addresses[0], "/echo") as ws:
                await ping(ws)
                stop.set()
                assert await expect_close(ws) == 1001
        # Leaving the nursery means serve() returned once the trigger fired.
    assert len(server.registry) == 0
