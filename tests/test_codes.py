"""One list of codes: what the server can put in an error envelope is exactly what the
generated client types (TypeScript, JSON Schema, AsyncAPI) tell clients to expect."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import attrs
import trio

from trio_wsroutes import (
    Connection,
    Context,
    WebSocketServer,
    create_websocket_route,
    generate_asyncapi,
    generate_json_schema,
    generate_websocket_types,
    message,
)
from trio_wsroutes._codes import (
    ADMIN_ERROR_CODES,
    CLOSE_CODES,
    DENIAL_CODES,
    ENVELOPE_ERROR_CODES,
    CloseCode,
)
from trio_wsroutes.testing import TestClient, TransportName

PACKAGE = Path(__file__).resolve().parent.parent / "trio_wsroutes"


@attrs.frozen
class Item:
    n: int


@message("ok")
@attrs.frozen
class Ok:
    n: int


def provoking_server() -> WebSocketServer:
    route = (
        create_websocket_route("/r")
        .server_messages(Ok)
        .rate_limit(1 / 3600, burst=9)
        .handler_timeout(0.05)
    )

    @route.authorize_subscribe
    def allowed(ws: Connection[Ok], topic: str, ctx: Context[None]) -> bool:
        return topic != "secret"

    @route.on("secret", Item)
    async def secret(ws: Connection[Ok], data: Item, ctx: Context[None]) -> None:
        await ws.subscribe("secret")

    @route.on("item", Item)
    async def item(ws: Connection[Ok], data: Item, ctx: Context[None]) -> Ok:
        return Ok(data.n)

    @route.on("slow", Item)
    async def slow(ws: Connection[Ok], data: Item, ctx: Context[None]) -> None:
        await trio.sleep_forever()

    @route.on("topic", Item)
    async def topic(ws: Connection[Ok], data: Item, ctx: Context[None]) -> None:
        await ws.subscribe("t" * data.n)

    @route.on("topics", Item)
    async def topics(ws: Connection[Ok], data: Item, ctx: Context[None]) -> None:
        for index in range(data.n):
            await ws.subscribe(f"topic-{index}")

    @route.on("crash", Item)
    async def crash(ws: Connection[Ok], data: Item, ctx: Context[None]) -> None:
        raise RuntimeError("secret")

    return WebSocketServer([route], max_topics_per_connection=2, max_topic_length=10)


async def test_every_envelope_code_is_sent_and_listed(memory_transport: TransportName) -> None:
    sent: set[str] = set()
    inputs: list[Any] = [
        "not json",
        "[1]",
        {"type": "nope"},
        {"type": "item", "data": {"n": "x"}},
        {"type": "slow", "data": {"n": 1}},
        {"type": "topic", "data": {"n": 11}},
        {"type": "secret", "data": {"n": 1}},
        {"type": "topics", "data": {"n": 3}},
        {"type": "item", "data": {"n": 1}},  # the 9th message: the last the bucket holds
        {"type": "item", "data": {"n": 2}},  # RATE_LIMITED
    ]
    async with (
        TestClient(provoking_server(), transport=memory_transport) as client,
        client.connect("/r") as ws,
    ):
        for value in inputs:
            await (ws.send_text(value) if isinstance(value, str) else ws.send_json(value))
        replies = [await ws.receive() for _ in inputs]
        sent |= {reply["code"] for reply in replies if reply["type"] == "error"}
    async with (
        TestClient(provoking_server(), transport=memory_transport) as client,
        client.connect("/r") as ws,
    ):
        await ws.send("crash", {"n": 1})
        sent.add((await ws.receive())["code"])
    assert sent == set(ENVELOPE_ERROR_CODES)


def _codes_in_source() -> set[str]:
    """Codes the package passes to ``encode_error``/``MessageError``/``ProtocolError``,
    by the constant's name (a string literal there would bypass the list)."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name not in ("encode_error", "MessageError", "ProtocolError"):
                continue
            args = list(node.args) + [k.value for k in node.keywords if k.arg == "code"]
            position = 0 if name == "encode_error" else 1
            if len(args) > position:
                code = args[position]
                assert not isinstance(code, ast.Constant), (
                    f"{path.name}:{node.lineno}: a literal error code; add it to _codes.py"
                )
                if isinstance(code, ast.Name) and code.id.isupper():
                    found.add(code.id)
    return found


def test_the_package_sends_only_listed_codes() -> None:
    in_source = _codes_in_source()
    assert in_source  # the scan sees the calls
    assert in_source <= set(ENVELOPE_ERROR_CODES) | set(ADMIN_ERROR_CODES)


def test_generated_types_list_exactly_the_envelope_codes() -> None:
    server = provoking_server()
    typescript = generate_websocket_types(server)
    union = re.search(r"export type WebSocketErrorCode =(.*?);", typescript, re.S)
    assert union is not None
    listed = re.findall(r'\|\s*"([A-Z_]+)"', union.group(1))
    assert set(listed) == set(ENVELOPE_ERROR_CODES)
    schema = json.loads(generate_json_schema(server))
    code_schema = json.dumps(schema)
    for code in ENVELOPE_ERROR_CODES:
        assert f'"{code}"' in code_schema
    for code in DENIAL_CODES:
        assert f'"{code}"' not in code_schema  # HTTP denials never come as envelopes
    asyncapi = generate_asyncapi(server, format="json")
    for code in ENVELOPE_ERROR_CODES:
        assert f'"{code}"' in asyncapi


def test_close_codes_are_the_public_constants() -> None:
    constants = {
        value
        for name, value in vars(CloseCode).items()
        if name.isupper() and isinstance(value, int)
    }
    assert set(CLOSE_CODES) <= constants
