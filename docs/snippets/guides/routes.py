"""Snippets for the "Routes and validation" guide."""

from __future__ import annotations

import datetime
import decimal
import enum
import uuid
from typing import Literal

import attrs

from trio_wsroutes import (
    Connection,
    Context,
    WebSocketServer,
    converter,
    create_websocket_route,
    message,
)


# [schemas]
class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


@attrs.frozen
class Attachment:
    url: str
    size: int = attrs.field(validator=attrs.validators.le(10_000_000))


@attrs.frozen
class Post:
    title: str = attrs.field(validator=attrs.validators.max_len(200))
    body: str = ""
    tags: list[str] = attrs.Factory(list)
    priority: Priority = Priority.LOW
    kind: Literal["note", "question"] = "note"
    attachment: Attachment | None = None


# [/schemas]


# [typed-fields]
@attrs.frozen
class Transfer:
    id: uuid.UUID
    amount: decimal.Decimal
    at: datetime.datetime
    value_date: datetime.date


sent = {
    "id": "123e4567-e89b-12d3-a456-426614174000",
    "amount": "12.50",
    "at": "2024-01-02T03:04:05Z",
    "value_date": "2024-01-02",
}
transfer = converter.structure(sent, Transfer)  # what a handler gets
assert transfer.amount == decimal.Decimal("12.50")
assert transfer.at.tzinfo is not None
assert converter.unstructure(transfer) == sent | {"at": "2024-01-02T03:04:05+00:00"}
# [/typed-fields]


# [server-messages]
@message("posted")
@attrs.frozen
class Posted:
    id: int
    title: str


# [/server-messages]

# [builder]
board = create_websocket_route("/boards/:board_id").server_messages(Posted)


@board.on("post", Post)  # as a decorator: returns the function unchanged
async def post(ws: Connection[Posted], data: Post, ctx: Context[None]) -> Posted:
    return Posted(id=1, title=data.title)


async def ping(ws: Connection[Posted], data: Post, ctx: Context[None]) -> None: ...


board.on("ping", Post, ping)  # with the handler: returns the route, for chaining
# [/builder]


# [raw-frames]
@board.on_text
async def legacy_text(ws: Connection[Posted], text: str, ctx: Context[None]) -> None:
    # Text frames that are not envelopes land here instead of an INVALID_JSON error.
    ...


@board.on_binary
async def upload(ws: Connection[Posted], data: bytes, ctx: Context[None]) -> None:
    # Without on_binary, a binary frame closes the connection with 1003.
    ...


# [/raw-frames]

# [paths]
lobby = create_websocket_route("/boards/lobby")  # static segments win over parameters
server = WebSocketServer([board, lobby])
assert server.router.match("/boards/lobby") is not None
match = server.router.match("/boards/42")
assert match is not None
assert dict(match.params) == {"board_id": "42"}
# [/paths]
