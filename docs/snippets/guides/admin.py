"""Snippets for the "Admin page" guide."""

from __future__ import annotations

import hmac
import ipaddress
import os

import attrs

from trio_wsroutes import (
    Admin,
    Reject,
    Request,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
)

chat = create_websocket_route("/chat/:room")


# [token-cookie]
ADMIN_TOKEN = os.environ.get("ADMIN_TOKEN", "")  # a long random secret


def admin_by_cookie(request: Request) -> str | None:
    token = request.cookies.get("admin_token", "")
    if ADMIN_TOKEN and hmac.compare_digest(token.encode(), ADMIN_TOKEN.encode()):
        return "ops"  # who the page says is signed in, and who the log names
    return None  # 401


server = WebSocketServer([chat], admin=Admin(authenticate=admin_by_cookie))
# [/token-cookie]


# [sessions]
@attrs.frozen
class Staff:
    id: str
    is_admin: bool


SESSIONS = {"s-3f9a": Staff("ada", is_admin=True), "s-77c1": Staff("bob", is_admin=False)}


async def admin_session(session_id: str) -> Staff | None:
    staff = SESSIONS.get(session_id)  # the application's own session store
    if staff is not None and not staff.is_admin:
        raise Reject(403, "Forbidden", "FORBIDDEN")
    return staff


sessions = WebSocketServer(
    [chat],
    admin=Admin(
        authenticate=create_token_auth(admin_session, cookie_name="session", check_query=False)
    ),
)
# [/sessions]


# [allow-list]
OPERATORS = [ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("127.0.0.1/32")]


def from_operators(request: Request) -> str | None:
    if request.client is None:
        return None
    try:
        address = ipaddress.ip_address(request.client[0])
    except ValueError:
        return None
    if not any(address in network for network in OPERATORS):
        raise Reject(403, "Forbidden", "FORBIDDEN")
    return str(address)


internal = WebSocketServer(
    [chat],
    trusted_proxies=["10.0.0.2"],  # the proxy's address: request.client is the operator's
    admin=Admin(authenticate=from_operators, path="/_ops/admin"),
)
# [/allow-list]


assert server.admin is not None
assert server.admin.live_path == "/admin/live"
assert internal.admin is not None
assert internal.admin.live_path == "/_ops/admin/live"
