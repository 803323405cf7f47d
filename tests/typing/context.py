"""ctx.user follows authenticate; ctx.params and ctx.data have fixed types."""

from __future__ import annotations

from collections.abc import Mapping
from typing import assert_type

import attrs

from trio_wsroutes import (
    Authenticated,
    Connection,
    Context,
    Request,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
    message,
)


@attrs.frozen
class User:
    id: int
    name: str


@message("note")
@attrs.frozen
class Note:
    text: str


@message("other")
@attrs.frozen
class Other:
    x: int


def sync_auth(request: Request) -> User | None:
    return None


async def async_auth(request: Request) -> User | None:
    return None


async def verify(token: str) -> User | None:
    return None


async def verify_expiring(token: str) -> Authenticated[User] | None:
    return None


def expiring_auth(request: Request) -> Authenticated[User] | None:
    return None


sync_route = create_websocket_route("/s").server_messages(Note).authenticate(sync_auth)
async_route = create_websocket_route("/a").authenticate(async_auth).server_messages(Note)
token_route = (
    create_websocket_route("/t").server_messages(Note).authenticate(create_token_auth(verify))
)
public = create_websocket_route("/p").server_messages(Note)
# Credentials that expire: ctx.user is still the user, not the wrapper.
expiring_token_route = (
    create_websocket_route("/e")
    .server_messages(Note)
    .authenticate(create_token_auth(verify_expiring))
)
expiring_route = create_websocket_route("/f").server_messages(Note).authenticate(expiring_auth)


@sync_route.on_connect
async def on_sync(ws: Connection[Note], ctx: Context[User]) -> None:
    # ✅ ctx.user is User, not User | None, not Any.
    assert_type(ctx.user, User)
    assert_type(ctx.params, Mapping[str, str])
    assert_type(ctx.data, dict[str, object])
    assert_type(ctx.connection_id, str)


@async_route.on_connect
async def on_async(ws: Connection[Note], ctx: Context[User]) -> None:
    assert_type(ctx.user.name, str)


@token_route.on_connect
async def on_token(ws: Connection[Note], ctx: Context[User]) -> None:
    assert_type(ctx.user.id, int)


@expiring_token_route.on_connect
async def on_expiring_token(ws: Connection[Note], ctx: Context[User]) -> None:
    assert_type(ctx.user.name, str)


@expiring_route.on_connect
async def on_expiring(ws: Connection[Note], ctx: Context[User]) -> None:
    assert_type(ctx.user, User)


@expiring_route.on_close  # expect-error
async def on_expiring_close(
    ws: Connection[Note], code: int, reason: str, ctx: Context[Authenticated[User]]
) -> None: ...


@public.on_connect
async def on_public(ws: Connection[Note], ctx: Context[None]) -> None:
    # ✅ without authenticate, ctx.user is None.
    assert_type(ctx.user, None)
    ctx.params["room"] = "x"  # expect-error


# ❌ an authenticated handler cannot pretend the user is something else.
@sync_route.on_close  # expect-error
async def on_close(ws: Connection[Note], code: int, reason: str, ctx: Context[str]) -> None: ...


server = WebSocketServer([sync_route, async_route, token_route, public])


async def background() -> None:
    # ✅ publishing for a route takes that route's messages.
    await server.publish("t", Note("hi"), route=sync_route)
    # ❌ and refuses others.
    await server.publish("t", Other(1), route=sync_route)  # expect-error
