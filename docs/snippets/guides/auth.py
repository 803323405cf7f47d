"""Snippets for the "Authentication and security" guide."""

from __future__ import annotations

import time

import attrs

from trio_wsroutes import (
    Authenticated,
    Connection,
    Context,
    Reject,
    Request,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
    extract_token,
    message,
)
from trio_wsroutes.client import connect


@attrs.frozen
class User:
    id: str
    banned: bool = False


USERS = {"t-ada": User("ada"), "t-mallory": User("mallory", banned=True)}


# [verify]
async def verify(token: str) -> User | None:
    user = USERS.get(token)  # a JWT check or a session lookup in real life
    if user is not None and user.banned:
        raise Reject(403, "Account suspended", "SUSPENDED")
    return user


chat = (
    create_websocket_route("/chat/:room")
    .authenticate(create_token_auth(verify, cookie_name="session"))
    .allowed_origins(["https://app.example.com", "https://*.example.com"])
)
# [/verify]


# [custom]
async def admin_only(request: Request) -> User | None:
    token = request.headers.get("x-api-key") or request.query.get("key")
    user = USERS.get(token or "")
    if user is None or user.id != "ada":
        return None  # 401
    return user


admin = create_websocket_route("/admin").authenticate(admin_only)
# [/custom]


# [first-message]
@attrs.frozen
class Hello:
    token: str


@message("welcome")
@attrs.frozen
class Welcome:
    user_id: str


lobby = create_websocket_route("/lobby").server_messages(Welcome)


@lobby.on("hello", Hello)
async def hello(ws: Connection[Welcome], data: Hello, ctx: Context[None]) -> Welcome | None:
    user = await verify(data.token)
    if user is None:
        await ws.close(4001, "unauthorized")
        return None
    ctx.data["user"] = user
    return Welcome(user_id=user.id)


# [/first-message]

# [expiring]
SESSIONS = {"s-ada": ("ada", time.time() + 3600)}  # token -> (user id, expiry)


async def verify_session(token: str) -> Authenticated[User] | None:
    found = SESSIONS.get(token)  # in real life: a JWT's "sub" and "exp", checked
    if found is None:
        return None
    user_id, expires_at = found
    return Authenticated(User(user_id), expires_at=expires_at)


feed = (
    create_websocket_route("/feed")
    .authenticate(create_token_auth(verify_session))
    .token_refresh(before=60, grace=15)  # ask a minute ahead; wait 15 s for the answer
)
# [/expiring]


# [custom-refresh]
async def expiring_api_key(request: Request) -> Authenticated[User] | None:
    # extract_token reads the bearer header first: where a token sent on the open
    # connection is put when this function checks it again.
    token = extract_token(request, query_param_name="access_token")
    found = SESSIONS.get(token or "")
    if found is None:
        return None
    return Authenticated(User(found[0]), expires_at=found[1])


reports = create_websocket_route("/reports").authenticate(expiring_api_key)
# [/custom-refresh]


# [client-refresh]
async def fetch_token() -> str:
    # Called before every connection and whenever the server asks for a new token.
    return "s-ada"  # in real life: POST /token with a refresh token


async def follow_the_feed(url: str) -> None:
    async with connect(url, feed, token=fetch_token, reconnect=True) as client:
        async for msg in client:
            print(msg)


# [/client-refresh]

# [server]
server = WebSocketServer(
    [chat, admin, lobby, feed, reports],
    allowed_origins=["https://app.example.com"],  # the default for routes without their own
    trusted_proxies=["10.0.0.0/8"],  # believe X-Forwarded-For only from the load balancer
)
# [/server]
