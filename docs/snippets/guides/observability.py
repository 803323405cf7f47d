"""Snippets for the "Observability" guide."""

from __future__ import annotations

import ipaddress
import logging

import attrs
from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from trio_wsroutes import (
    Connection,
    Context,
    JSONFormatter,
    Metrics,
    Request,
    RouteStats,
    WebSocketServer,
    create_websocket_route,
    message,
)


@attrs.frozen
class User:
    account: str
    name: str


@message("say")
@attrs.frozen
class Say:
    text: str


@message("said")
@attrs.frozen
class Said:
    user: str
    text: str


def authenticate(request: Request) -> User | None:
    name = request.query.get("name")  # a token check in real life
    return None if name is None else User(account=f"acct-{name}", name=name)


chat = (
    create_websocket_route("/chat/:room")
    .authenticate(authenticate)
    .client_messages(Say)
    .server_messages(Said)
)


@chat.on("say", Say)
async def say(ws: Connection[Said], data: Say, ctx: Context[User]) -> Said:
    said = Said(user=ctx.user.name, text=data.text)
    room = f"room:{ctx.request.path_params['room']}"
    await ws.subscribe(room)
    await ws.publish(room, said)  # to the room's other subscribers
    return said


# [enable]
server = WebSocketServer([chat], metrics=True)
# [/enable]


# [options]
def from_private_network(request: Request) -> bool:
    # request.client is the address the trusted proxy reports, not the proxy's own.
    client = request.client
    return client is not None and ipaddress.ip_address(client[0]).is_private


guarded = WebSocketServer(
    [chat],
    trusted_proxies=["127.0.0.1", "10.0.0.0/8"],
    metrics=Metrics(
        path="/internal/metrics",
        authorize=from_private_network,
        process_metrics=False,
    ),
)
# [/options]


# [starlette]
async def homepage(request: HTTPRequest) -> PlainTextResponse:
    return PlainTextResponse("hello")


site = Starlette(routes=[Route("/", homepage)])
with_site = WebSocketServer([chat], http_app=site, metrics=Metrics(authorize=from_private_network))
site.mount("/ops/metrics", with_site.metrics_app)
# [/starlette]


# [route-stats]
def slowest_handlers(stats: dict[str, RouteStats]) -> list[tuple[str, str, float]]:
    """(route, message type, p99 seconds) of every handler that ran, slowest first."""
    rows = []
    for route in stats.values():
        for kind, durations in route.handler_seconds.items():
            p99 = durations.quantile(0.99)
            if p99 is not None:
                rows.append((route.path, kind, p99))
    return sorted(rows, key=lambda row: row[2], reverse=True)


# slowest_handlers(server.route_stats)
# [/route-stats]


# [access-log]
def log_access_as_json() -> logging.Handler:
    handler = logging.StreamHandler()  # standard error; a FileHandler works the same
    handler.setFormatter(JSONFormatter())
    access = logging.getLogger("trio_wsroutes.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False  # once, even if the root logger prints records too
    return handler


# [/access-log]


# [user-id]
def account_of(user: User) -> str:
    return user.account


logged = WebSocketServer([chat], user_id=account_of)
# [/user-id]
