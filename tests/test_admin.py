"""The admin page (``WebSocketServer(admin=Admin(...))``): refused by default and to
anyone ``authenticate`` refuses, on both transports; its live route's snapshots tell
what the clients did; it closes a connection on order and says so in the log; it is the
server's own route, not the application's."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from contextlib import AsyncExitStack
from typing import Any

import attrs
import orjson
import pytest
import trio

from tests._http import http_request
from tests.conftest import ServeLive, wait_until
from trio_wsroutes import (
    Admin,
    BoundAddress,
    Connection,
    Context,
    History,
    Reject,
    Request,
    WebSocketServer,
    create_websocket_route,
    generate_asyncapi,
    generate_json_schema,
    message,
)
from trio_wsroutes._admin import CLOSED_BY_ADMIN, AdminSite
from trio_wsroutes._admin_messages import (
    AdminHello,
    AdminSnapshot,
    CloseConnection,
    RefreshSnapshot,
)
from trio_wsroutes._admin_snapshot import HISTORY_COUNT_LIMIT
from trio_wsroutes._codes import UNKNOWN_CONNECTION
from trio_wsroutes._observability import Metrics
from trio_wsroutes.client import (
    Client,
    ConnectionDenied,
    ServerError,
    WebSocketClosed,
    connect,
)

TIMEOUT = 15
ADMIN_TOKEN = "admin-token"


# -- the application ---------------------------------------------------------------------


@attrs.frozen
class Say:
    text: str


@message("welcome")
@attrs.frozen
class Welcome:
    id: str


@message("said")
@attrs.frozen
class Said:
    text: str


def chat_route() -> Any:
    def user(request: Request) -> str | None:
        return request.query.get("user")

    route = (
        create_websocket_route("/chat/:room")
        .server_messages(Welcome, Said)
        .client_messages(Say)
        .authenticate(user)
    )

    @route.on_connect
    async def joined(ws: Connection[Welcome | Said], ctx: Context[str]) -> None:
        await ws.subscribe(f"room:{ctx.request.path_params['room']}")
        await ws.send(Welcome(id=ctx.connection_id))

    @route.on("say", Say)
    async def say(ws: Connection[Welcome | Said], data: Say, ctx: Context[str]) -> None:
        await ws.publish(f"room:{ctx.request.path_params['room']}", Said(data.text))

    return route


@attrs.frozen
class Staff:
    id: str


def staff_only(request: Request) -> Staff | None:
    authorization = request.headers.get("authorization", "")
    if authorization == "Bearer banned":
        raise Reject(403, "Account suspended", "SUSPENDED")
    if authorization == "Bearer broken":
        raise RuntimeError("the user store is down")
    return Staff("ada") if authorization == f"Bearer {ADMIN_TOKEN}" else None


def chat_server(**admin: Any) -> WebSocketServer:
    admin.setdefault("authenticate", staff_only)
    return WebSocketServer(
        [chat_route()], admin=Admin(**admin), history={"room:*": History(size=100)}
    )


def admin_site(server: WebSocketServer) -> AdminSite:
    site = server._admin_site
    assert site is not None
    return site


def admin_route(server: WebSocketServer) -> Any:
    return admin_site(server).route  # the live route, for the typed client


def open_admin(server: WebSocketServer, address: BoundAddress, **options: Any) -> Any:
    options.setdefault("token", ADMIN_TOKEN)
    return connect(f"{address.ws_url}/admin/live", admin_route(server), **options)


async def join(stack: AsyncExitStack, address: BoundAddress, room: str, user: str) -> Any:
    client = await stack.enter_async_context(
        connect(f"{address.ws_url}/chat/{room}?user={user}", chat_route())
    )
    welcome = await client.receive()
    assert isinstance(welcome, Welcome)
    return client, welcome.id


async def hello_then_snapshot(admin: Client[Any, Any]) -> AdminSnapshot:
    hello = await admin.receive()
    assert hello == AdminHello(user="ada", interval=hello.interval, version=hello.version)
    first = await admin.receive()
    assert isinstance(first, AdminSnapshot)
    return first


async def end_of(client: Client[Any, Any]) -> WebSocketClosed:
    """Read ``client`` until the server closes it; how it closed."""
    while True:
        try:
            await client.receive()
        except WebSocketClosed as closed:
            return closed


# -- refused by default, and to whoever authenticate refuses ------------------------------


async def test_without_the_option_nothing_is_served(serve_live: ServeLive) -> None:
    server = WebSocketServer([chat_route()])
    async with serve_live(server) as address:
        page = await http_request(
            address, "GET", "/admin", [("authorization", f"Bearer {ADMIN_TOKEN}")]
        )
        assert page.status == 404
        with trio.fail_after(TIMEOUT), pytest.raises(ConnectionDenied) as denied:
            async with connect(f"{address.ws_url}/admin/live", admin_route(chat_server())):
                pass
        assert denied.value.status == 404


@pytest.mark.parametrize(
    ("authorization", "status", "code"),
    [
        (None, 401, "UNAUTHORIZED"),
        ("Bearer wrong", 401, "UNAUTHORIZED"),
        ("Bearer banned", 403, "SUSPENDED"),
        ("Bearer broken", 401, "AUTH_ERROR"),
    ],
)
async def test_the_page_is_refused_without_good_credentials(
    serve_live: ServeLive,
    authorization: str | None,
    status: int,
    code: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = chat_server()
    headers = [] if authorization is None else [("authorization", authorization)]
    async with serve_live(server) as address, AsyncExitStack() as stack:
        await join(stack, address, "lobby", "bob")  # something to show, were it shown
        for method in ("GET", "HEAD"):
            answer = await http_request(address, method, "/admin", headers)
            assert answer.status == status
            if method == "GET":
                # The refusal and nothing else: no page, no numbers, no exception text.
                assert orjson.loads(answer.body)["code"] == code
                assert set(orjson.loads(answer.body)) == {"message", "code"}
                assert b"lobby" not in answer.body
                assert b"user store" not in answer.body
        with trio.fail_after(TIMEOUT), pytest.raises(ConnectionDenied) as denied:
            async with open_admin(server, address, token=None, headers=headers):
                pass
        assert (denied.value.status, denied.value.code) == (status, code)
    if code == "AUTH_ERROR":
        assert "Admin.authenticate failed" in caplog.text


async def test_the_page_is_served_with_good_credentials(serve_live: ServeLive) -> None:
    server = chat_server()
    good = [("authorization", f"Bearer {ADMIN_TOKEN}")]
    async with serve_live(server) as address:
        page = await http_request(address, "GET", "/admin", good)
        assert page.status == 200
        assert page.header("content-type") == "text/html; charset=utf-8"
        assert page.header("cache-control") == "no-store"
        text = page.body.decode()
        assert 'data-live="/admin/live"' in text
        assert "/*admin.js*/" not in text
        assert "/*admin.css*/" not in text
        assert "http://" not in text
        assert "https://" not in text  # nothing from elsewhere: no CDN
        # The policy allows exactly the inlined script and stylesheet, and no framing.
        policy = page.header("content-security-policy") or ""
        assert "frame-ancestors 'none'" in policy
        for tag in ("script", "style"):
            inline = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
            assert inline is not None
            digest = base64.b64encode(hashlib.sha256(inline[1].encode()).digest()).decode()
            assert f"{tag}-src 'sha256-{digest}'" in policy

        # HEAD: the same headers and not a byte of body (read raw, to the end of the
        # stream: an HTTP client would stop at the headers).
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with stream:
            await stream.send_all(
                f"HEAD /admin HTTP/1.1\r\nHost: {address.host}:{address.port}\r\n"
                f"Authorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n".encode()
            )
            raw = b""
            with trio.fail_after(TIMEOUT):
                while chunk := await stream.receive_some():
                    raw += chunk
        head, _, rest = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert f"content-length: {len(page.body)}".encode() in head.lower()
        assert rest == b""
        post = await http_request(address, "POST", "/admin", good)
        assert post.status == 405
        assert b"<html" not in post.body


async def test_the_live_route_accepts_only_the_pages_own_origin(serve_live: ServeLive) -> None:
    server = chat_server()
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT), pytest.raises(ConnectionDenied) as denied:
            async with open_admin(server, address, origin="https://evil.example"):
                pass
        assert (denied.value.status, denied.value.code) == (403, "FORBIDDEN_ORIGIN")
        own = f"http://{address.host}:{address.port}"
        with trio.fail_after(TIMEOUT):
            async with open_admin(server, address, origin=own) as admin:
                await hello_then_snapshot(admin)


# -- what the live route tells ----------------------------------------------------------


async def test_the_snapshot_tells_what_the_clients_did(serve_live: ServeLive) -> None:
    server = chat_server()
    said = {"ada": 3, "bob": 2, "cy": 4}
    rooms = {"ada": "a", "bob": "a", "cy": "b"}
    with trio.fail_after(TIMEOUT):
        async with serve_live(server) as address, AsyncExitStack() as stack:
            clients = {user: await join(stack, address, rooms[user], user) for user in said}
            for user, count in said.items():
                for n in range(count):
                    await clients[user][0].request(Say(f"{user} {n}"))  # acked once handled
            admin = await stack.enter_async_context(open_admin(server, address))
            await hello_then_snapshot(admin)
            snapshot = await admin.request(RefreshSnapshot(), AdminSnapshot)

    # Deliveries: each message to every other subscriber of its room (ws.publish leaves
    # out the sender).
    in_room = {room: sum(1 for r in rooms.values() if r == room) for room in rooms.values()}
    deliveries = sum(count * (in_room[rooms[user]] - 1) for user, count in said.items())
    messages = sum(said.values())
    [route] = snapshot.routes  # the application's one route; the admin's is not listed
    assert route.route == "/chat/:room"
    assert route.connections == 3
    assert route.messages_in == messages
    assert route.deliveries == deliveries
    assert route.messages_out == 3 + messages + deliveries  # welcomes, acks, deliveries
    [handler] = snapshot.handlers
    assert (handler.route, handler.type, handler.count) == ("/chat/:room", "say", messages)
    assert handler.p50 is not None
    assert handler.p99 is not None
    assert handler.p50 <= handler.p99
    assert {(t.topic, t.subscribers, t.history) for t in snapshot.topics} == {
        ("room:a", 2, said["ada"] + said["bob"]),
        ("room:b", 1, said["cy"]),
    }
    assert snapshot.totals.connections == 3
    assert snapshot.totals.topics == 2
    assert snapshot.totals.subscriptions == 3
    assert snapshot.totals.memory_used > 0  # the subscriptions, at least
    assert snapshot.totals.memory_limit == server.memory.limit
    assert {(c.id, c.route, c.path, c.user) for c in snapshot.connections} == {
        (clients[user][1], "/chat/:room", f"/chat/{rooms[user]}", user) for user in said
    }
    # The page's own connection is in none of the application's numbers.
    assert list(server.route_stats) == ["/chat/:room"]
    assert server.stats.connections_accepted == 3


async def test_snapshots_come_by_themselves_with_rates(serve_live: ServeLive) -> None:
    server = chat_server(interval=0.1)
    with trio.fail_after(TIMEOUT):
        async with serve_live(server) as address, AsyncExitStack() as stack:
            client, _ = await join(stack, address, "a", "ada")
            await join(stack, address, "a", "bob")  # someone to deliver to
            admin = await stack.enter_async_context(open_admin(server, address))
            await hello_then_snapshot(admin)
            seen_rate = False
            while not seen_rate:  # every snapshot from now on is pushed, unasked
                await client.request(Say("hi"))
                snapshot = await admin.receive()
                assert isinstance(snapshot, AdminSnapshot)
                [route] = snapshot.routes
                seen_rate = (
                    route.messages_in_per_second > 0
                    and route.deliveries_per_second > 0
                    and snapshot.totals.messages_in_per_second > 0
                    and snapshot.totals.publishes_per_second > 0
                )


async def test_history_is_counted_up_to_a_bound(serve_live: ServeLive) -> None:
    server = WebSocketServer(
        [chat_route()],
        admin=Admin(authenticate=staff_only),
        history={"room:*": History(size=HISTORY_COUNT_LIMIT + 500)},
    )
    with trio.fail_after(TIMEOUT):
        async with serve_live(server) as address, AsyncExitStack() as stack:
            await join(stack, address, "a", "ada")
            for n in range(HISTORY_COUNT_LIMIT + 200):
                await server.publish("room:a", Said(str(n)))
            admin = await stack.enter_async_context(open_admin(server, address))
            await hello_then_snapshot(admin)
            snapshot = await admin.request(RefreshSnapshot(), AdminSnapshot)
    assert [(t.topic, t.history) for t in snapshot.topics] == [("room:a", HISTORY_COUNT_LIMIT)]


async def test_a_failing_snapshot_costs_one_update_not_the_server(
    serve_live: ServeLive, caplog: pytest.LogCaptureFixture
) -> None:
    server = chat_server(interval=0.05)
    sampler = admin_site(server).sampler
    sample = sampler.sample
    failures = 0

    async def failing_twice() -> AdminSnapshot:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise RuntimeError("a bug in the snapshot")
        return await sample()

    with trio.fail_after(TIMEOUT):
        async with serve_live(server) as address, AsyncExitStack() as stack:
            admin = await stack.enter_async_context(open_admin(server, address))
            await hello_then_snapshot(admin)
            sampler.sample = failing_twice  # type: ignore[method-assign]
            await wait_until(lambda: failures == 2)
            assert isinstance(await admin.receive(), AdminSnapshot)  # the next one came
            await join(stack, address, "a", "bob")  # and the server still serves
    assert "the admin page's snapshot failed" in caplog.text


# -- closing a connection from the page ----------------------------------------------------


async def test_closing_a_connection_from_the_live_route(
    serve_live: ServeLive, caplog: pytest.LogCaptureFixture
) -> None:
    server = chat_server()
    caplog.set_level(logging.WARNING, logger="trio_wsroutes")
    with trio.fail_after(TIMEOUT):
        async with serve_live(server) as address, AsyncExitStack() as stack:
            victim, victim_id = await join(stack, address, "a", "mallory")
            bystander, bystander_id = await join(stack, address, "a", "bob")
            admin = await stack.enter_async_context(open_admin(server, address))
            await hello_then_snapshot(admin)
            assert await admin.request(CloseConnection(victim_id, "spam\nforged line")) is None
            closed = await end_of(victim)
            assert (closed.code, closed.reason) == (1008, CLOSED_BY_ADMIN)
            await wait_until(lambda: server.registry.get(victim_id) is None)
            snapshot = await admin.request(RefreshSnapshot(), AdminSnapshot)
            assert [c.id for c in snapshot.connections] == [bystander_id]
            await bystander.request(Say("still here"))  # the others are not touched
    [record] = [r for r in caplog.records if "closed connection" in r.getMessage()]
    assert record.levelno == logging.WARNING
    line = record.getMessage()
    assert "administrator ada" in line
    assert victim_id in line
    assert "mallory" in line
    assert "\n" not in line  # the reason cannot forge log lines


async def test_closing_an_unknown_connection_is_an_error(serve_live: ServeLive) -> None:
    server = chat_server()
    with trio.fail_after(TIMEOUT):
        async with serve_live(server) as address, AsyncExitStack() as stack:
            _, client_id = await join(stack, address, "a", "bob")
            admin = await stack.enter_async_context(open_admin(server, address))
            await hello_then_snapshot(admin)
            with pytest.raises(ServerError) as error:
                await admin.request(CloseConnection("0" * 32))
            assert error.value.code == UNKNOWN_CONNECTION
            # The page stays connected, and closes nothing else.
            snapshot = await admin.request(RefreshSnapshot(), AdminSnapshot)
            assert [c.id for c in snapshot.connections] == [client_id]


async def test_shutdown_closes_the_pages_too(serve_live: ServeLive) -> None:
    server = chat_server()
    codes: list[int] = []

    async def watch(address: BoundAddress, task_status: trio.TaskStatus[None]) -> None:
        async with open_admin(server, address) as admin:
            await hello_then_snapshot(admin)
            task_status.started()
            codes.append((await end_of(admin)).code)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with serve_live(server) as address:
                await nursery.start(watch, address)
            # The server has stopped; its page was told why.
    assert codes == [1001]


# -- the server's own route, not the application's -----------------------------------------


def test_the_live_route_is_not_in_the_applications_types() -> None:
    server = chat_server()
    assert [route.path for route in server.routes] == ["/chat/:room"]
    for text in (
        server.generate_websocket_types(),
        generate_asyncapi(server),
        generate_json_schema(server),
    ):
        assert "/chat/:room" in text
        for name in ("/admin/live", "admin_snapshot", "close_connection", "AdminSnapshot"):
            assert name not in text


def test_the_option_refuses_what_cannot_work() -> None:
    with pytest.raises(TypeError, match="authenticate"):
        Admin()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="authenticate"):
        Admin(authenticate="secret")  # type: ignore[arg-type]
    for path in ("admin", "/admin/", "/", "/admin/:id", "/a b", "/admin?x=1", "/ops/.."):
        with pytest.raises(ValueError, match="path"):
            Admin(authenticate=staff_only, path=path)
    with pytest.raises(TypeError, match="list of origins"):
        Admin(authenticate=staff_only, allowed_origins="self")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Admin"):
        WebSocketServer(admin=staff_only)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two HTTP endpoints"):
        WebSocketServer(
            metrics=Metrics(path="/ops"), admin=Admin(authenticate=staff_only, path="/ops")
        )
    clash = WebSocketServer(
        [create_websocket_route("/admin/live")], admin=Admin(authenticate=staff_only)
    )
    with pytest.raises(ValueError, match=r"Admin\(path=\.\.\.\)"):
        _ = clash.route_stats  # resolving the routes, as serving does at startup
