"""The Python client sends its token where the route reads it, and a token function is
asked for a current token before every connection, as the browser client does.

Over real servers, both transports; 127.0.0.1 only, every wait bounded.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests._messages import Ping, Pong
from tests.conftest import ServeLive, wait_until
from trio_wsroutes import (
    CloseCode,
    Connection,
    Context,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
)
from trio_wsroutes.client import Backoff, ConnectionDenied, connect

TIMEOUT = 10
FAST = Backoff(initial=0.02, maximum=0.2)

PLACES: dict[str, dict[str, Any]] = {
    "header": {"check_query": False},
    "query": {"check_header": False, "query_param_name": "access_token"},
    "cookie": {"check_header": False, "check_query": False, "cookie_name": "session"},
}


def server(place: str, seen: list[str], valid: set[str]) -> WebSocketServer:
    def verify(token: str) -> str | None:
        seen.append(token)
        return token if token in valid else None

    route = (
        create_websocket_route("/r")
        .server_messages(Pong)
        .authenticate(create_token_auth(verify, **PLACES[place]))
    )

    @route.on("ping", Ping)
    async def ping(ws: Connection[Pong], data: Ping, ctx: Context[str]) -> Pong:
        if data.n == 0:
            await ws.close(CloseCode.SERVICE_RESTART, "restarting")
        return Pong(data.n)

    # A cookie route refuses cross-site upgrades unless told: this client sends no Origin.
    return WebSocketServer([route], allowed_origins=["*"] if place == "cookie" else None)


@pytest.mark.parametrize("place", sorted(PLACES))
async def test_the_token_goes_where_the_route_reads_it(serve_live: ServeLive, place: str) -> None:
    # Before, the token went only as Authorization: Bearer, and a route reading a query
    # parameter or a cookie denied it with 401.
    seen: list[str] = []
    async with serve_live(server(place, seen, {"secret"})) as address:
        with trio.fail_after(TIMEOUT):
            route = server(place, [], set()).routes[0]
            async with connect(f"{address.ws_url}/r", route, token="secret") as client:
                assert await client.request(Ping(1), Pong) == Pong(1)
            with pytest.raises(ConnectionDenied) as denied:
                async with connect(f"{address.ws_url}/r", route, token="wrong"):
                    pass
    assert denied.value.status == 401
    assert seen == ["secret", "wrong"]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_token_function_is_asked_before_every_connection(
    serve_live: ServeLive, asynchronous: bool
) -> None:
    seen: list[str] = []
    issued = iter(["first", "second", "third"])
    valid = {"first", "second"}
    app = server("query", seen, valid)

    def fresh() -> str:
        return next(issued)

    async def fresh_async() -> str:
        await trio.lowlevel.checkpoint()
        return next(issued)

    token = fresh_async if asynchronous else fresh
    async with serve_live(app) as address:
        with trio.fail_after(TIMEOUT):
            async with connect(
                f"{address.ws_url}/r", app.routes[0], token=token, reconnect=FAST
            ) as client:
                assert await client.request(Ping(1), Pong) == Pong(1)
                await client.send(Ping(0))  # the server closes with 1012: reconnect
                await wait_until(lambda: client.reconnects >= 1)
                assert await client.request(Ping(2), Pong) == Pong(2)
    assert seen[:2] == ["first", "second"]  # a new token for the reconnection


async def test_a_token_function_that_returns_no_str_is_a_type_error(
    serve_live: ServeLive,
) -> None:
    app = server("header", [], {"t"})

    def broken() -> Any:
        return 42

    async with serve_live(app) as address:
        with trio.fail_after(TIMEOUT), pytest.raises(TypeError, match="gave a int"):
            async with connect(f"{address.ws_url}/r", app.routes[0], token=broken):
                pass
