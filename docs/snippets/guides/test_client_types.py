"""Snippets for the "Client types" guide (collected and run by pytest).

``client_types.ts`` beside this file is what ``generate_websocket_types`` writes for the
routes below, and ``client_types_client.ts`` the client ``trio-wsroutes typegen --client``
writes for them; the tests fail when either is stale.
"""

from __future__ import annotations

import enum
from pathlib import Path

import attrs

from trio_wsroutes import (
    Connection,
    Context,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
    message,
)
from trio_wsroutes._typegen import generate_websocket_client


# [classes]
class Mood(enum.Enum):
    HAPPY = "happy"
    GRUMPY = "grumpy"


@attrs.frozen
class Author:
    name: str
    mood: Mood = Mood.HAPPY


@attrs.frozen
class Post:
    """Post a note to the board."""

    text: str
    tags: list[str] = attrs.Factory(list)
    reply_to: int | None = None


@message("posted")
@attrs.frozen
class Posted:
    """A note, as everyone on the board sees it."""

    id: int
    text: str
    author: Author
    reply_to: int | None


# [/classes]


def check(token: str) -> Author | None:
    return Author(token) if token else None


# [route]
board = (
    create_websocket_route("/api/boards/:board")
    .server_messages(Posted)
    .authenticate(create_token_auth(check))
)


@board.on("post", Post)
async def post(ws: Connection[Posted], data: Post, ctx: Context[Author]) -> Posted:
    note = Posted(id=1, text=data.text, author=ctx.user, reply_to=data.reply_to)
    await ws.publish(f"board:{ctx.params['board']}", note)
    return note


server = WebSocketServer([board])
# [/route]


def test_the_guide_shows_what_the_generator_writes() -> None:
    # [generate]
    text = server.generate_websocket_types()  # or output_path="client/websocket-types.ts"
    # [/generate]
    committed = Path(__file__).with_name("client_types.ts").read_text()
    assert text == committed, "regenerate docs/snippets/guides/client_types.ts"


def test_the_guide_shows_what_the_client_generator_writes() -> None:
    text = generate_websocket_client(server, types_module="./client_types.js")
    committed = Path(__file__).with_name("client_types_client.ts").read_text()
    assert text == committed, "regenerate docs/snippets/guides/client_types_client.ts"
