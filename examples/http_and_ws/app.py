"""A Starlette app and typed WebSocket routes on one port, sharing one ``verify_token``.

``verify_token`` is the only place that knows what a token is. Starlette's
``AuthenticationMiddleware`` uses it for HTTP; ``create_token_auth`` uses it for the
WebSocket upgrade, reading the same ``Authorization: Bearer`` header, or the ``session``
cookie that ``POST /login`` sets (browsers cannot set headers on a WebSocket, but they
send cookies). Needs Starlette: ``pip install -e '.[examples]'``, then
``python -m examples.http_and_ws``.
"""

from __future__ import annotations

import attrs
import trio
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    requires,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from trio_wsroutes import (
    Connection,
    Context,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
    extract_bearer_token,
    message,
)

# -- the one shared check ------------------------------------------------------------------


@attrs.frozen
class User:
    """An authenticated user."""

    id: str
    name: str


SESSIONS = {"alice-token": User("1", "Alice"), "bob-token": User("2", "Bob")}


async def verify_token(token: str) -> User | None:
    """The single source of truth for tokens (a JWT check or a session lookup in real life)."""
    await trio.lowlevel.checkpoint()
    return SESSIONS.get(token)


# -- HTTP: Starlette ------------------------------------------------------------------------


class StarletteUser(BaseUser):
    """Starlette's view of our user."""

    def __init__(self, user: User) -> None:
        self.user = user

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.user.name


class TokenBackend(AuthenticationBackend):
    """Starlette authentication through ``verify_token``: bearer header or session cookie."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        header = conn.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            token = conn.cookies.get("session", "")
        user = await verify_token(token) if token else None
        if user is None:
            return None
        return AuthCredentials(["authenticated"]), StarletteUser(user)


@requires("authenticated")
async def me(request: Request) -> Response:
    """Who am I, over HTTP."""
    user: StarletteUser = request.user
    return JSONResponse({"id": user.user.id, "name": user.user.name})


INDEX_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>HTTP and WebSocket on one port</title>
</head>
<body>
<h1>HTTP and WebSocket on one port</h1>
<p>One <code>verify_token</code> guards both: Starlette's <code>GET /api/me</code> and the
WebSocket route <code>/ws/updates</code>. Log in (a session cookie), then ask each.</p>
<p>
  <button id="alice">Log in as Alice</button>
  <button id="bob">Log in as Bob</button>
  <button id="http">GET /api/me</button>
  <button id="ws">WebSocket: whoami</button>
</p>
<pre id="log"></pre>
<script>
const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
async function login(token) {
  const response = await fetch("/login?token=" + token, { method: "POST" });
  log("POST /login: " + response.status + " " + (await response.text()));
}
document.getElementById("alice").onclick = () => login("alice-token");
document.getElementById("bob").onclick = () => login("bob-token");
document.getElementById("http").onclick = async () => {
  const response = await fetch("/api/me");
  log("GET /api/me: " + response.status + " " + (await response.text()));
};
document.getElementById("ws").onclick = () => {
  const url = new URL("/ws/updates", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url);
  ws.onopen = () => ws.send(JSON.stringify({ type: "whoami", id: 1 }));
  ws.onmessage = (event) => { log("WebSocket: " + event.data); ws.close(); };
  ws.onerror = () => log("WebSocket: refused (log in first: the upgrade gets a 401)");
};
</script>
</body>
</html>
"""


async def index(request: Request) -> Response:
    """A page to try both sides from a browser."""
    return HTMLResponse(INDEX_HTML)


async def login(request: Request) -> Response:
    """Set the session cookie for a demo user (``POST /login?token=alice-token``)."""
    token = request.query_params.get("token", "")
    if await verify_token(token) is None:
        return JSONResponse({"error": "unknown token"}, status_code=401)
    response = JSONResponse({"ok": True})
    response.set_cookie("session", token, httponly=True, samesite="strict")
    return response


http_app = Starlette(
    routes=[
        Route("/", index),
        Route("/api/me", me),
        Route("/login", login, methods=["POST"]),
    ],
    middleware=[Middleware(AuthenticationMiddleware, backend=TokenBackend())],
)

# -- WebSocket: the same check on the upgrade ------------------------------------------------


@attrs.frozen
class WhoAmI:
    """Ask who the connection belongs to."""


@message("you_are")
@attrs.frozen
class YouAre:
    """The authenticated user of this connection."""

    id: str
    name: str
    via: str


updates = (
    create_websocket_route("/ws/updates")
    .server_messages(YouAre)
    .authenticate(create_token_auth(verify_token, check_query=False, cookie_name="session"))
    # Its cookie makes it a target for other sites' pages: only its own page may connect.
    .allowed_origins(["self"])
)


@updates.on("whoami", WhoAmI)
async def whoami(ws: Connection[YouAre], data: WhoAmI, ctx: Context[User]) -> YouAre:
    via = "header" if extract_bearer_token(ctx.request) else "cookie"
    return YouAre(id=ctx.user.id, name=ctx.user.name, via=via)


server = WebSocketServer([updates], http_app=http_app)
