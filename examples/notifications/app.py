"""Per-user notifications pushed by a background task.

Each connection authenticates with a token (``?token=``, a bearer header, or a ``token``
cookie) and subscribes to ``user:{id}``. A publisher started at server startup pushes
notifications to those topics, the way a job queue or a database listener would; the
client marks them read with an RPC. Run: ``python -m examples.notifications`` and connect
to ``ws://127.0.0.1:8000/notifications?token=alice-token``.
"""

from __future__ import annotations

import itertools
import os

import attrs
import trio

from trio_wsroutes import (
    Connection,
    Context,
    MessageError,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
    message,
)


@attrs.frozen
class User:
    """Who is connected."""

    id: str
    name: str


# A stand-in for your user database or JWT check.
TOKENS = {"alice-token": User("1", "Alice"), "bob-token": User("2", "Bob")}


async def verify_token(token: str) -> User | None:
    """Return the user a token belongs to, or ``None``."""
    await trio.lowlevel.checkpoint()
    return TOKENS.get(token)


@attrs.frozen
class MarkRead:
    """Mark a notification as read."""

    id: str


@message("notification")
@attrs.frozen
class Notification:
    """Something happened that this user should know."""

    id: str
    title: str
    body: str


@message("read")
@attrs.frozen
class Read:
    """Confirms ``mark_read``."""

    id: str


notifications = (
    create_websocket_route("/notifications")
    .server_messages(Notification, Read)
    .authenticate(create_token_auth(verify_token, cookie_name="token"))
    # Its cookie makes it a target for other sites' pages: only its own page may connect.
    .allowed_origins(["self"])
)

unread: dict[str, set[str]] = {}


@notifications.on_connect
async def subscribe_to_own_topic(ws: Connection[Notification | Read], ctx: Context[User]) -> None:
    await ws.subscribe(f"user:{ctx.user.id}")


@notifications.on("mark_read", MarkRead)
async def mark_read(
    ws: Connection[Notification | Read], data: MarkRead, ctx: Context[User]
) -> Read:
    mine = unread.setdefault(ctx.user.id, set())
    if data.id not in mine:
        raise MessageError(f"No unread notification {data.id!r}", code="NOT_FOUND")
    mine.discard(data.id)
    return Read(id=data.id)


server = WebSocketServer([notifications])
_ids = itertools.count(1)


async def notify(user_id: str, title: str, body: str) -> int:
    """Push a notification to every open connection of one user; returns how many."""
    notification = Notification(id=str(next(_ids)), title=title, body=body)
    unread.setdefault(user_id, set()).add(notification.id)
    return await server.publish(f"user:{user_id}", notification, route=notifications)


INTERVAL = float(os.environ.get("NOTIFY_INTERVAL", "5"))


@server.on_startup
async def start_publisher(nursery: trio.Nursery) -> None:
    """Every few seconds, tell each known user the time (a stand-in for real events)."""

    async def publisher() -> None:
        while True:
            await trio.sleep(INTERVAL)
            for user in TOKENS.values():
                await notify(user.id, "Reminder", f"Hello {user.name}, still here.")

    nursery.start_soon(publisher)
