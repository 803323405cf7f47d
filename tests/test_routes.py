"""The route builder and path patterns."""

from __future__ import annotations

import attrs
import pytest

from tests._messages import Ping, Pong
from trio_wsroutes import Connection, Context, WebSocketServer, create_websocket_route, message
from trio_wsroutes._routes import PathPattern, Router
from trio_wsroutes.testing import ConnectionDenied, TestClient


@message("where")
@attrs.frozen
class Where:
    route: str
    params: dict[str, str]


async def test_on_with_handler_returns_route_for_chaining() -> None:
    async def ping(ws: Connection[Pong], data: Ping, ctx: Context[None]) -> Pong:
        return Pong(data.n)

    route = create_websocket_route("/a").server_messages(Pong)
    assert route.on("ping", Ping, ping) is route
    assert route.handlers["ping"].handler is ping


async def test_on_as_decorator_returns_function_unchanged() -> None:
    route = create_websocket_route("/a")

    async def ping(ws: Connection[Pong], data: Ping, ctx: Context[None]) -> Pong:
        return Pong(data.n)

    assert route.on("ping", Ping)(ping) is ping


async def test_hook_decorators_return_function_unchanged() -> None:
    route = create_websocket_route("/a")

    async def connect(ws: Connection[object], ctx: Context[None]) -> None: ...
    async def close(
        ws: Connection[object], code: int, reason: str, ctx: Context[None]
    ) -> None: ...
    async def error(ws: Connection[object], exc: Exception, ctx: Context[None]) -> None: ...
    async def binary(ws: Connection[object], data: bytes, ctx: Context[None]) -> None: ...
    async def text(ws: Connection[object], data: str, ctx: Context[None]) -> None: ...

    assert route.on_connect(connect) is connect
    assert route.on_close(close) is close
    assert route.on_error(error) is error
    assert route.on_binary(binary) is binary
    assert route.on_text(text) is text


def test_two_handlers_for_one_type_fail_at_registration() -> None:
    route = create_websocket_route("/a")

    async def one(ws: Connection[object], data: Ping, ctx: Context[None]) -> None: ...

    route.on("ping", Ping, one)
    with pytest.raises(ValueError, match="already has a handler for 'ping'"):
        route.on("ping", Ping, one)


def test_second_lifecycle_hook_fails() -> None:
    route = create_websocket_route("/a")

    async def connect(ws: Connection[object], ctx: Context[None]) -> None: ...

    route.on_connect(connect)
    with pytest.raises(ValueError, match="already has an on_connect"):
        route.on_connect(connect)


def test_sync_handler_is_refused() -> None:
    route = create_websocket_route("/a")

    def sync(ws: object, data: Ping, ctx: object) -> None: ...

    with pytest.raises(TypeError, match="async function"):
        route.on("ping", Ping, sync)  # type: ignore[arg-type]


def test_schema_must_be_attrs_class() -> None:
    route = create_websocket_route("/a")
    with pytest.raises(TypeError, match="attrs class"):
        route.on("ping", dict)  # type: ignore[type-var]


def test_server_messages_must_be_tagged() -> None:
    with pytest.raises(TypeError, match=r"@message"):
        create_websocket_route("/a").server_messages(Ping)


def test_server_messages_refuse_two_classes_with_one_wire_type() -> None:
    @message("pong")
    @attrs.frozen
    class OtherPong:
        x: int

    with pytest.raises(ValueError, match="'pong' is used by two"):
        create_websocket_route("/a").server_messages(Pong, OtherPong)


def test_message_decorator_refuses_error_and_non_attrs() -> None:
    with pytest.raises(ValueError, match="error"):
        message("error")
    with pytest.raises(TypeError, match="attrs"):
        message("x")(int)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/chat/:room", "/chat/general", {"room": "general"}),
        ("/chat/{room}", "/chat/general", {"room": "general"}),
        ("/rooms/:room_id/chat/:chat_id", "/rooms/1/chat/2", {"room_id": "1", "chat_id": "2"}),
        ("/chat/:room", "/chat/general/", {"room": "general"}),
        ("/chat/:room", "/chat", None),
        ("/chat/:room", "/chat/a/b", None),
        ("/chat/:room", "/chat//", None),
        ("/", "/", {}),
    ],
)
def test_path_pattern_match(pattern: str, path: str, expected: dict[str, str] | None) -> None:
    assert PathPattern.parse(pattern).match(path) == expected


@pytest.mark.parametrize("bad", ["chat", "/a/:1x", "/a/{x", "/a/:x/:x"])
def test_malformed_patterns_fail(bad: str) -> None:
    with pytest.raises(ValueError):
        PathPattern.parse(bad)


def test_router_static_segments_win_over_parameters() -> None:
    param = create_websocket_route("/rooms/:room/chat")
    static = create_websocket_route("/rooms/lobby/chat")
    router = Router([param, static])
    lobby = router.match("/rooms/lobby/chat")
    other = router.match("/rooms/kitchen/chat")
    assert lobby is not None and lobby.route is static and lobby.params == {}
    assert other is not None and other.route is param and other.params == {"room": "kitchen"}


def test_router_backtracks_from_static_to_parameter() -> None:
    static = create_websocket_route("/a/b/c")
    param = create_websocket_route("/a/:x/d")
    router = Router([static, param])
    found = router.match("/a/b/d")
    assert found is not None and found.route is param and found.params == {"x": "b"}


def test_route_registered_twice_fails() -> None:
    route = create_websocket_route("/chat/:room")
    with pytest.raises(ValueError, match="registered twice"):
        WebSocketServer([route, route])


def test_routes_with_the_same_shape_fail() -> None:
    with pytest.raises(ValueError, match="match the same paths"):
        Router([create_websocket_route("/chat/:room"), create_websocket_route("/chat/{name}")])


async def test_params_reach_the_context() -> None:
    route = create_websocket_route("/rooms/:room_id/chat/{chat_id}").server_messages(Where)

    @route.on_connect
    async def hello(ws: Connection[Where], ctx: Context[None]) -> None:
        await ws.send(Where(route=ws.path, params=dict(ctx.params)))

    async with (
        TestClient(WebSocketServer([route])) as client,
        client.connect("/rooms/r%201/chat/7") as ws,
    ):
        reply = await ws.receive()
    assert reply == {
        "type": "where",
        "data": {
            "route": "/rooms/:room_id/chat/{chat_id}",
            "params": {"room_id": "r 1", "chat_id": "7"},
        },
    }


async def test_unknown_path_is_denied_with_404() -> None:
    server = WebSocketServer([create_websocket_route("/chat/:room")])
    async with TestClient(server) as client:
        with pytest.raises(ConnectionDenied) as denied:
            async with client.connect("/nope"):
                pass
    assert denied.value.status == 404
    assert denied.value.json() == {"message": "Not Found", "code": "NOT_FOUND"}
    assert denied.value.header("content-type") == "application/json"
