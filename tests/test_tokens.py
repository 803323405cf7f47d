"""Tokens that expire: ``authenticate`` returns ``Authenticated(user, expires_at=...)``, the
server asks for a new token over the open connection before the expiry, and a valid one
for the same user moves the expiry on without a reconnection; anything else closes the
connection with 3000.

Over real sockets on both transports (raw JSON with trio-websocket, and the typed Python
client), 127.0.0.1 only; every wait is bounded. Tokens here are ``NAME:GENERATION:EXPIRY``
(UNIX seconds) and live a second or two: the route asks for a new one halfway, and waits
half a second more than the expiry for it.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.conftest import ServeLive, wait_until
from trio_wsroutes import (
    Authenticated,
    CloseCode,
    Connection,
    Context,
    Request,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
    extract_token,
    message,
)
from trio_wsroutes._auth import TokenPlaces
from trio_wsroutes._request import Headers
from trio_wsroutes._tokens import refresh_request, unwrap
from trio_wsroutes.client import Backoff, Client, WebSocketClosed, connect
from trio_wsroutes.testing import ConnectionDenied, TestClient

TIMEOUT = 20
LIFETIME = 1.5


@attrs.frozen
class User:
    id: str
    generation: int


@attrs.frozen
class WhoAmI:
    pass


@message("me")
@attrs.frozen
class Me:
    id: str
    generation: int


@message("news")
@attrs.frozen
class News:
    n: int


def token(name: str, generation: int, lifetime: float = LIFETIME) -> str:
    return f"{name}:{generation}:{time.time() + lifetime}"


def verify(value: str) -> Authenticated[User] | None:
    name, _, rest = value.partition(":")
    generation, _, expiry = rest.partition(":")
    if name == "bad" or not generation.isdigit():
        return None
    return Authenticated(User(name, int(generation)), expires_at=float(expiry))


def feed_server(**options: Any) -> WebSocketServer:
    route = (
        create_websocket_route("/feed")
        .server_messages(Me, News)
        .authenticate(create_token_auth(verify))
        .token_refresh(before=1.0, grace=0.5)
    )

    @route.on_connect
    async def joined(ws: Connection[Me | News], ctx: Context[User]) -> None:
        await ws.subscribe("news")

    @route.on("whoami", WhoAmI)
    async def whoami(ws: Connection[Me | News], data: WhoAmI, ctx: Context[User]) -> Me:
        return Me(ctx.user.id, ctx.user.generation)

    return WebSocketServer([route], **options)


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await ws.get_message())
    return message


async def closed_with(ws: WebSocketConnection) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    while True:
        try:
            await ws.get_message()
        except ConnectionClosed as closed:
            return closed.reason.code, closed.reason.reason or ""


async def generation(client: Client[Me | News, WhoAmI], at_least: int) -> None:
    """Ask ``whoami`` until the server's ``ctx.user`` has that generation (or more)."""
    while True:
        if (await client.request(WhoAmI(), Me)).generation >= at_least:
            return
        await trio.sleep(0.05)


# -- the exchange on the wire -----------------------------------------------------------


async def test_a_new_token_moves_the_expiry_on_without_a_reconnection(
    serve_live: ServeLive,
) -> None:
    server = feed_server()
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            first = token("ada", 1)
            expires = float(first.rsplit(":", 1)[1])
            async with open_websocket_url(f"{address.ws_url}/feed?token={first}") as ws:
                ask = await receive(ws)
                assert ask == {"type": "refresh", "id": ask["id"]}
                assert isinstance(ask["id"], str)
                new = token("ada", 2, 30)
                answer = {"type": "refresh", "id": ask["id"], "data": {"token": new}}
                await ws.send_message(json.dumps(answer))
                assert await receive(ws) == {"type": "ack", "id": ask["id"]}
                # Past the first token's expiry (and its grace): still open, still served.
                await trio.sleep(expires + 0.7 - time.time())
                await server.publish("news", News(1))
                assert await receive(ws) == {"type": "news", "data": {"n": 1}}
                await ws.send_message(json.dumps({"type": "whoami", "id": 7}))
                # ctx.user is the user the new token gave.
                assert await receive(ws) == {
                    "type": "me",
                    "data": {"id": "ada", "generation": 2},
                    "id": 7,
                }


ANSWERS = {
    "refused": lambda: {"token": "bad:1:0"},
    "another user": lambda: {"token": token("bob", 2, 30)},
    "not a later expiry": lambda: {"token": "ada:2:1"},  # expired already: refused
    "no token": lambda: {"tok": "x"},
}


@pytest.mark.parametrize("answer", sorted(ANSWERS))
async def test_a_token_that_is_not_valid_for_the_same_user_closes_with_3000(
    serve_live: ServeLive, answer: str
) -> None:
    async with serve_live(feed_server()) as address:
        with trio.fail_after(TIMEOUT):
            url = f"{address.ws_url}/feed?token={token('ada', 1, 1.0)}"
            async with open_websocket_url(url) as ws:
                ask = await receive(ws)
                reply = {"type": "refresh", "id": ask["id"], "data": ANSWERS[answer]()}
                await ws.send_message(json.dumps(reply))
                assert await closed_with(ws) == (CloseCode.UNAUTHORIZED, "token refused")


async def test_the_same_token_again_is_refused(serve_live: ServeLive) -> None:
    # What a custom authenticate reading its token from the upgrade request would check
    # again: a token that does not expire later than the current one.
    async with serve_live(feed_server()) as address:
        with trio.fail_after(TIMEOUT):
            first = token("ada", 1, 1.0)
            async with open_websocket_url(f"{address.ws_url}/feed?token={first}") as ws:
                ask = await receive(ws)
                reply = {"type": "refresh", "id": ask["id"], "data": {"token": first}}
                await ws.send_message(json.dumps(reply))
                assert await closed_with(ws) == (CloseCode.UNAUTHORIZED, "token refused")


async def test_no_answer_within_the_grace_closes_with_3000(serve_live: ServeLive) -> None:
    async with serve_live(feed_server()) as address:
        with trio.fail_after(TIMEOUT):
            async with open_websocket_url(f"{address.ws_url}/feed?token={token('ada', 1)}") as ws:
                assert (await receive(ws))["type"] == "refresh"
                assert await closed_with(ws) == (CloseCode.UNAUTHORIZED, "token expired")


async def test_an_answer_to_no_request_is_an_error_and_the_connection_goes_on() -> None:
    async with TestClient(feed_server()) as client:
        url = f"/feed?token={token('ada', 1, 60)}"
        async with client.connect(url) as ws:
            await ws.send_json({"type": "refresh", "id": "refresh-1", "data": {"token": "x"}})
            error = await ws.receive()
            assert error["code"] == "INVALID_MESSAGE"
            assert error["id"] == "refresh-1"
            assert await ws.request("whoami") == {
                "type": "me",
                "data": {"id": "ada", "generation": 1},
                "id": "req-1",
            }


async def test_credentials_expired_already_are_denied_at_the_upgrade() -> None:
    async with TestClient(feed_server()) as client:
        with pytest.raises(ConnectionDenied) as denied:
            async with client.connect(f"/feed?token={token('ada', 1, -1)}"):
                pass
    assert denied.value.status == 401
    assert denied.value.code == "UNAUTHORIZED"


# -- the Python client -------------------------------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_the_python_client_refreshes_through_its_token_function(
    serve_live: ServeLive, asynchronous: bool
) -> None:
    server = feed_server()
    issued: list[str] = []

    def fresh() -> str:
        issued.append(token("ada", len(issued) + 1))
        return issued[-1]

    async def fresh_async() -> str:
        await trio.lowlevel.checkpoint()
        return fresh()

    source = fresh_async if asynchronous else fresh
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            route = server.routes[0]
            async with connect(f"{address.ws_url}/feed", route, token=source) as client:
                # Two refreshes, on the one connection (the third token's user is ctx.user
                # once the server has checked it).
                await generation(client, 3)
                assert client.reconnects == 0
    assert len(issued) >= 3


async def test_the_python_client_stops_after_3000_with_a_fixed_token(
    serve_live: ServeLive,
) -> None:
    server = feed_server()
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            fixed = token("ada", 1)  # the refresh sends it again: no later expiry, refused
            url = f"{address.ws_url}/feed"
            async with connect(url, server.routes[0], token=fixed, reconnect=Backoff(0.02)) as c:
                while True:
                    try:
                        await c.receive()
                    except WebSocketClosed as closed:
                        assert closed.code == CloseCode.UNAUTHORIZED
                        break
                assert c.reconnects == 0


async def test_the_python_client_reconnects_after_3000_with_a_token_function(
    serve_live: ServeLive,
) -> None:
    server = feed_server()
    calls: list[str] = []

    def issue() -> str:
        # Every other token is one the server refuses: the refresh closes with 3000.
        calls.append("bad:0:0" if len(calls) % 2 else token("ada", len(calls) + 1))
        return calls[-1]

    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            url = f"{address.ws_url}/feed"
            async with connect(url, server.routes[0], token=issue, reconnect=Backoff(0.02)) as c:
                await wait_until(lambda: c.reconnects > 0)
                assert await c.request(WhoAmI(), Me) == Me("ada", 3)


async def test_the_test_clients_typed_client_refreshes_in_memory() -> None:
    server = feed_server()
    issued: list[int] = []

    def fresh() -> str:
        issued.append(len(issued) + 1)
        return token("ada", issued[-1])

    with trio.fail_after(TIMEOUT):
        async with TestClient(server) as test, test.client(server.routes[0], token=fresh) as c:
            await generation(c, 2)
            assert c.reconnects == 0


# -- the pieces ------------------------------------------------------------------------------


def test_expiry_is_a_timestamp_or_an_aware_datetime() -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert unwrap(Authenticated("ada", expires_at=at)) == ("ada", at.timestamp())
    assert unwrap(Authenticated("ada", expires_at=12)) == ("ada", 12.0)
    assert unwrap(Authenticated("ada")) == ("ada", None)
    assert unwrap("ada") == ("ada", None)
    with pytest.raises(ValueError, match="timezone-aware"):
        Authenticated("ada", expires_at=datetime(2030, 1, 1))
    with pytest.raises(TypeError, match="UNIX timestamp"):
        Authenticated("ada", expires_at=True)
    with pytest.raises(ValueError, match="finite"):
        Authenticated("ada", expires_at=float("nan"))
    assert unwrap(Authenticated("ada", expires_at=at + timedelta(hours=1)))[1] == (
        at.timestamp() + 3600
    )


def upgrade() -> Request:
    return Request(
        path="/r",
        headers=Headers(
            [("authorization", "Bearer old"), ("cookie", "a=1; session=old"), ("x-other", "y")]
        ),
        query_string="room=1&key=old",
        client=("127.0.0.1", 5000),
    )


def test_the_new_token_replaces_the_old_one_where_the_route_reads_it() -> None:
    header = refresh_request(upgrade(), "new", TokenPlaces(header=True, query=None, cookie=None))
    assert header.headers.get_all("authorization") == ["Bearer new"]
    assert header.headers["x-other"] == "y"
    assert header.client == ("127.0.0.1", 5000)
    query = refresh_request(upgrade(), "new", TokenPlaces(header=False, query="key", cookie=None))
    assert query.query.get_all("key") == ["new"]
    assert query.query["room"] == "1"
    cookie = refresh_request(
        upgrade(), "new", TokenPlaces(header=False, query=None, cookie="session")
    )
    assert dict(cookie.cookies) == {"a": "1", "session": "new"}
    # A custom authenticate reads the bearer header first (extract_token does).
    custom = refresh_request(upgrade(), "new", None)
    assert extract_token(custom) == "new"
