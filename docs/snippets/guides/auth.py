"""Snippets for the "Authentication and security" guide."""

from __future__ import annotations

import attrs

from trio_wsroutes import (
    Connection,
    Context,
    Reject,
    Request,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
    message,
)


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

# [server]
server = WebSocketServer(
    [chat, admin, lobby],
    allowed_origins=["https://app.example.com"],  # the default for routes without their own
    trusted_proxies=["10.0.0.0/8"],  # believe X-Forwarded-For only from the load balancer
)
# [/server]
