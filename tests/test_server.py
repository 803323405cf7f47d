"""WebSocketServer: registry, publishing from anywhere, auth on the upgrade, HTTP side."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from trio_wsroutes import (
    Connection,
    Context,
    Reject,
    Request,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes.testing import ConnectionDenied, TestClient


@attrs.frozen
class Say:
    text: str


@message("note")
@attrs.frozen
class Note:
    text: str


@attrs.frozen
class User:
    id: int
    name: str


def _users_route() -> Any:
    def auth(request: Request) -> User | None:
        token = request.query.get("token")
        return User(int(token), f"user{token}") if token else None

    route = create_websocket_route("/u").server_messages(Note).authenticate(auth)

    @route.on_connect
    async def join(ws: Connection[Note], ctx: Context[User]) -> None:
        await ws.subscribe("all")

    @route.on("say", Say)
    async def say(ws: Connection[Note], data: Say, ctx: Context[User]) -> None:
        await ws.publish("all", Note(f"{ctx.user.name}: {data.text}"))

    @route.on("say_all", Say)
    async def say_all(ws: Connection[Note], data: Say, ctx: Context[User]) -> None:
        await ws.publish("all", Note(data.text), include_self=True)

    return route


async def test_publish_from_a_connection_skips_the_sender_unless_asked() -> None:
    server = WebSocketServer([_users_route()])
    async with (
        TestClient(server) as client,
        client.connect("/u?token=1") as one,
        client.connect("/u?token=2") as two,
    ):
        await one.send("say", {"text": "hi"})
        assert await two.receive() == {"type": "note", "data": {"text": "user1: hi"}}
        await one.send("say_all", {"text": "everyone"})
        assert (await one.receive())["data"] == {"text": "everyone"}
        assert (await two.receive())["data"] == {"text": "everyone"}


async def test_server_publish_from_a_background_task() -> None:
    server = WebSocketServer([_users_route()])
    async with TestClient(server) as client, client.connect("/u?token=1") as ws:
        await trio.testing.wait_all_tasks_blocked()
        async with trio.open_nursery() as nursery:

            async def ticker() -> None:
                for n in range(3):
                    await server.publish("all", Note(f"tick {n}"))

            nursery.start_soon(ticker)
        assert [(await ws.receive())["data"]["text"] for _ in range(3)] == [
            "tick 0",
            "tick 1",
            "tick 2",
        ]
        assert await server.publish_binary("all", b"\x00\x01") == 1
        assert await ws.receive_bytes() == b"\x00\x01"
        assert await server.publish("nobody-here", Note("x")) == 0


async def test_registry_lists_filters_and_broadcasts() -> None:
    server = WebSocketServer([_users_route()])
    async with (
        TestClient(server) as client,
        client.connect("/u?token=1") as a,
        client.connect("/u?token=2") as b,
        client.connect("/u?token=1") as c,
    ):
        await trio.testing.wait_all_tasks_blocked()
        registry = server.registry
        assert len(registry) == 3
        ids = {ws.id for ws in registry.all()}
        assert len(ids) == 3
        some = next(iter(ids))
        found = registry.get(some)
        assert found is not None and found.id == some
        assert registry.get("missing") is None

        user1 = registry.by_user(User(1, "user1"))
        assert len(user1) == 2

        def picky(ws: Connection[Any]) -> bool:
            if ws.context.user.id == 2:
                raise RuntimeError("predicate bug")
            return True

        assert len(registry.filter(picky)) == 2  # the raising one is left out, not fatal

        assert registry.broadcast(Note("to all")) == 3
        for ws in (a, b, c):
            assert (await ws.receive())["data"] == {"text": "to all"}
        assert registry.broadcast_binary(b"raw", where=lambda ws: ws.context.user.id == 2) == 1
        assert await b.receive_bytes() == b"raw"


async def test_authenticate_sets_user_and_denies_with_401() -> None:
    server = WebSocketServer([_users_route()])
    async with TestClient(server) as client:
        with pytest.raises(ConnectionDenied) as denied:
            async with client.connect("/u"):
                pass
    assert denied.value.status == 401
    assert denied.value.json() == {"message": "Unauthorized", "code": "UNAUTHORIZED"}
    assert denied.value.header("content-type") == "application/json"


async def test_authenticate_exception_and_reject() -> None:
    async def failing(request: Request) -> User | None:
        raise RuntimeError("database password is hunter2")

    async def rejecting(request: Request) -> User | None:
        raise Reject(403, "Banned", "BANNED", headers={"x-reason": "ban"})

    server = WebSocketServer(
        [
            create_websocket_route("/fail").authenticate(failing),
            create_websocket_route("/reject").authenticate(rejecting),
        ]
    )
    async with TestClient(server) as client:
        with pytest.raises(ConnectionDenied) as failed:
            async with client.connect("/fail"):
                pass
        with pytest.raises(ConnectionDenied) as rejected:
            async with client.connect("/reject"):
                pass
    assert failed.value.status == 401
    assert failed.value.body == b'{"message":"Authentication failed","code":"AUTH_ERROR"}'
    assert b"hunter2" not in failed.value.body
    assert rejected.value.status == 403
    assert rejected.value.json() == {"message": "Banned", "code": "BANNED"}
    assert rejected.value.header("x-reason") == "ban"


async def test_allowed_origins_deny_other_origins_with_403() -> None:
    server = WebSocketServer(
        [create_websocket_route("/o")], allowed_origins=["https://app.example"]
    )
    async with TestClient(server) as client:
        async with client.connect("/o", origin="https://app.example"):
            pass
        async with client.connect("/o"):  # no Origin: not a browser, allowed by default
            pass
        with pytest.raises(ConnectionDenied) as denied:
            async with client.connect("/o", origin="https://evil.example"):
                pass
    assert denied.value.status == 403
    assert denied.value.json() == {"message": "Origin not allowed", "code": "FORBIDDEN_ORIGIN"}


async def test_require_origin_denies_requests_without_one() -> None:
    server = WebSocketServer([create_websocket_route("/o")], require_origin=True)
    async with TestClient(server) as client:
        async with client.connect("/o", origin="https://anything.example"):
            pass
        with pytest.raises(ConnectionDenied) as denied:
            async with client.connect("/o"):
                pass
    assert denied.value.status == 403


async def test_http_and_lifespan_go_to_the_http_app() -> None:
    seen: list[str] = []

    async def http_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                await send({"type": event["type"] + ".complete"})
                if event["type"] == "lifespan.shutdown":
                    return

    server = WebSocketServer([create_websocket_route("/ws")], http_app=http_app)
    async with TestClient(server) as client, client.connect("/ws"):
        pass
    assert seen == ["lifespan"]


async def test_http_without_http_app_gets_404() -> None:
    server = WebSocketServer([])
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(event: MutableMapping[str, Any]) -> None:
        sent.append(event)

    await server({"type": "http", "path": "/", "headers": []}, receive, send)
    assert sent[0]["status"] == 404


def test_invalid_options_fail_early() -> None:
    with pytest.raises(ValueError, match="positive"):
        WebSocketServer([], backpressure_limit=0)


async def test_publish_for_a_route_refuses_messages_the_route_does_not_send() -> None:
    @message("other")
    @attrs.frozen
    class Other:
        x: int

    route = _users_route()
    server = WebSocketServer([route])
    assert await server.publish("all", Note("fine"), route=route) == 0
    # The same refusal, word for word, as ws.send's (tests/test_definitions.py).
    with pytest.raises(
        TypeError,
        match=re.escape(
            "Other is not a server message of route '/u' (it declares Note); "
            "add it to .server_messages()"
        ),
    ):
        await server.publish("all", Other(1), route=route)
