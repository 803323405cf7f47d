"""The upgrade, over a real hypercorn: auth, origins, subprotocols, proxies, hostile requests.

Each denial is checked as the client sees it: HTTP status, headers and JSON body, and
that no handler of the route ran.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import orjson
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from trio_wsroutes import (
    BoundAddress,
    Connection,
    Context,
    Reject,
    Request,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
    message,
)

TIMEOUT = 10


@attrs.frozen
class User:
    name: str


@message("hello")
@attrs.frozen
class Hello:
    user: str
    client: str
    scheme: str
    subprotocol: str | None


class Calls:
    def __init__(self) -> None:
        self.auth = 0
        self.connect = 0


def make_server(calls: Calls, **options: Any) -> WebSocketServer:
    async def verify(token: str) -> User | None:
        calls.auth += 1
        if token == "boom":
            raise RuntimeError("secret-database-password")
        if token == "banned":
            raise Reject(403, "Banned", "BANNED", headers={"Retry-After": "3600"})
        return User(token) if token.startswith("ok-") else None

    route = (
        create_websocket_route("/ws")
        .server_messages(Hello)
        .authenticate(create_token_auth(verify, cookie_name="token"))
    )

    @route.on_connect
    async def hello(ws: Connection[Hello], ctx: Context[User]) -> None:
        calls.connect += 1
        client = ctx.request.client
        await ws.send(
            Hello(
                user=ctx.user.name,
                client=client[0] if client else "",
                scheme=ctx.request.scheme,
                subprotocol=ws.subprotocol,
            )
        )

    strict = (
        create_websocket_route("/strict")
        .server_messages(Hello)
        .allowed_origins(["https://*.example.com"], require=True)
        .subprotocols("chat.v2", "chat.v1")
    )

    @strict.on_connect
    async def strict_hello(ws: Connection[Hello], ctx: Context[None]) -> None:
        calls.connect += 1
        await ws.send(Hello(user="", client="", scheme="", subprotocol=ws.subprotocol))

    return WebSocketServer([route, strict], **options)


async def rejected(
    address: BoundAddress,
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    subprotocols: list[str] | None = None,
) -> ConnectionRejected:
    with trio.fail_after(TIMEOUT), pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(
            f"{address.ws_url}{path}", extra_headers=headers, subprotocols=subprotocols
        ):
            pass
    return info.value


def header(rejection: ConnectionRejected, name: str) -> str | None:
    for key, value in rejection.headers or []:
        if bytes(key).decode().lower() == name:
            return bytes(value).decode()
    return None


async def hello(
    address: BoundAddress,
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    subprotocols: list[str] | None = None,
) -> dict[str, Any]:
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(
            f"{address.ws_url}{path}", extra_headers=headers, subprotocols=subprotocols
        ) as ws:
            message = orjson.loads(await ws.get_message())
    assert message["type"] == "hello"
    data: dict[str, Any] = message["data"]
    return data


DENIALS = [
    ("/ws", [], 401, {"message": "Unauthorized", "code": "UNAUTHORIZED"}),
    ("/ws?token=nobody", [], 401, {"message": "Unauthorized", "code": "UNAUTHORIZED"}),
    ("/ws?token=boom", [], 401, {"message": "Authentication failed", "code": "AUTH_ERROR"}),
    ("/ws?token=banned", [], 403, {"message": "Banned", "code": "BANNED"}),
    ("/nowhere", [], 404, {"message": "Not Found", "code": "NOT_FOUND"}),
    (
        "/strict",
        [(b"origin", b"https://evil.example.net")],
        403,
        {"message": "Origin not allowed", "code": "FORBIDDEN_ORIGIN"},
    ),
    ("/strict", [], 403, {"message": "Origin not allowed", "code": "FORBIDDEN_ORIGIN"}),
    (
        "/strict",
        [(b"origin", b"https://app.example.com")],
        400,
        {
            "message": "None of the offered subprotocols is supported",
            "code": "UNSUPPORTED_SUBPROTOCOL",
        },
    ),
    (
        "/ws?" + "&".join(f"p{i}=1" for i in range(150)) + "&token=ok-a",
        [],
        400,
        {"message": "Too many query parameters", "code": "BAD_REQUEST"},
    ),
]


@pytest.mark.parametrize(("path", "headers", "status", "body"), DENIALS)
async def test_denials_are_json_http_responses_and_run_no_handler(
    serve_live: Callable[..., Any],
    path: str,
    headers: list[tuple[bytes, bytes]],
    status: int,
    body: dict[str, str],
) -> None:
    calls = Calls()
    async with serve_live(make_server(calls)) as address:
        rejection = await rejected(address, path, headers)
    assert rejection.status_code == status
    assert header(rejection, "content-type") == "application/json"
    assert rejection.body is not None
    assert orjson.loads(rejection.body) == body
    assert b"secret" not in rejection.body
    assert b"RuntimeError" not in rejection.body
    assert calls.connect == 0


async def test_reject_headers_and_unsupported_subprotocol_hint(
    serve_live: Callable[..., Any],
) -> None:
    calls = Calls()
    async with serve_live(make_server(calls)) as address:
        banned = await rejected(address, "/ws?token=banned")
        wrong = await rejected(
            address, "/strict", [(b"origin", b"https://a.example.com")], ["chat.v9"]
        )
    assert header(banned, "retry-after") == "3600"
    assert header(wrong, "sec-websocket-protocol") == "chat.v2, chat.v1"


async def test_token_from_header_query_and_cookie(serve_live: Callable[..., Any]) -> None:
    calls = Calls()
    async with serve_live(make_server(calls)) as address:
        by_header = await hello(address, "/ws", [(b"authorization", b"Bearer ok-h")])
        by_query = await hello(address, "/ws?token=ok-q")
        by_cookie = await hello(address, "/ws", [(b"cookie", b"token=ok-c")])
    assert [d["user"] for d in (by_header, by_query, by_cookie)] == ["ok-h", "ok-q", "ok-c"]
    assert calls.auth == 3


async def test_subprotocol_is_selected_by_the_route_preference(
    serve_live: Callable[..., Any],
) -> None:
    async with serve_live(make_server(Calls())) as address:
        origin = [(b"origin", b"https://app.example.com")]
        both = await hello(address, "/strict", origin, ["chat.v1", "chat.v2"])
        one = await hello(address, "/strict", origin, ["chat.v1"])
    assert both["subprotocol"] == "chat.v2"
    assert one["subprotocol"] == "chat.v1"


@pytest.mark.parametrize(
    ("trusted", "expected_client", "expected_scheme"),
    [
        (None, "127.0.0.1", "ws"),
        (["10.0.0.0/8"], "127.0.0.1", "ws"),
        (["127.0.0.1"], "203.0.113.7", "wss"),
    ],
)
async def test_forwarded_headers_only_from_trusted_proxies(
    serve_live: Callable[..., Any],
    trusted: list[str] | None,
    expected_client: str,
    expected_scheme: str,
) -> None:
    server = make_server(Calls(), trusted_proxies=trusted)
    forwarded = [
        (b"authorization", b"Bearer ok-p"),
        (b"x-forwarded-for", b"198.51.100.1, 203.0.113.7"),
        (b"x-forwarded-proto", b"https"),
    ]
    async with serve_live(server) as address:
        data = await hello(address, "/ws", forwarded)
    assert data["client"] == expected_client
    assert data["scheme"] == expected_scheme


async def send_raw(address: BoundAddress, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes; a reset is an answer too."""
    answer = bytearray()
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with stream:
            try:
                await stream.send_all(data)
                while chunk := await stream.receive_some():
                    answer += chunk
            except trio.BrokenResourceError:
                pass
    return bytes(answer)


def upgrade_request(target: str, extra: str = "") -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    ).encode()


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            upgrade_request("/ws", "X-Big: " + "a" * 1_000_000 + "\r\n"), id="1MB-header"
        ),
        pytest.param(
            upgrade_request("/ws?" + "&".join(f"k{i}=v" for i in range(10_000))),
            id="10000-params",
        ),
    ],
)
async def test_huge_requests_are_refused_and_the_server_keeps_serving(
    serve_live: Callable[..., Any], request_bytes: bytes
) -> None:
    calls = Calls()
    async with serve_live(make_server(calls)) as address:
        answer = await send_raw(address, request_bytes)
        # Refused before any upgrade: an HTTP error status, or the connection dropped.
        assert not answer.startswith(b"HTTP/1.1 101")
        if answer:
            status = int(answer.split(b" ", 2)[1])
            assert 400 <= status < 500
        assert calls.auth == 0
        assert (await hello(address, "/ws?token=ok-after"))["user"] == "ok-after"


async def test_trusted_proxies_parse_rfc7239_forwarded() -> None:
    from trio_wsroutes import Headers, TrustedProxies

    proxies = TrustedProxies(["10.0.0.0/8"])
    headers = Headers(
        [
            (
                b"forwarded",
                b'for=192.0.2.60;proto=http, for="[2001:db8::1]:4711";proto=https, for=10.1.2.3',
            )
        ]
    )
    client, scheme = proxies.resolve(("10.9.9.9", 1234), headers, "ws")
    assert client == ("2001:db8::1", 0)
    assert scheme == "wss"


def test_request_sees_path_params_after_routing() -> None:
    request = Request.from_scope({"path": "/x", "headers": []})
    assert dict(request.path_params) == {}
