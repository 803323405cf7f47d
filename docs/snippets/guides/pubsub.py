"""Snippets for the "Topics and broadcasting" guide."""

from __future__ import annotations

import attrs
import trio

from trio_wsroutes import Connection, Context, WebSocketServer, create_websocket_route, message


@message("price")
@attrs.frozen
class Price:
    symbol: str
    value: float


@attrs.frozen
class Watch:
    symbol: str


prices = create_websocket_route("/prices").server_messages(Price)


# [subscribe]
@prices.on("watch", Watch)
async def watch(ws: Connection[Price], data: Watch, ctx: Context[None]) -> None:
    await ws.subscribe(f"price:{data.symbol}")


@prices.on("unwatch", Watch)
async def unwatch(ws: Connection[Price], data: Watch, ctx: Context[None]) -> None:
    await ws.unsubscribe(f"price:{data.symbol}")


# [/subscribe]


# [authorize]
LISTED = {"ACME", "INITECH"}


@prices.authorize_subscribe
def listed_symbols_only(ws: Connection[Price], topic: str, ctx: Context[None]) -> bool:
    # Runs for every ws.subscribe of this route, whoever calls it.
    return topic.removeprefix("price:") in LISTED


# [/authorize]

server = WebSocketServer([prices])


# [background]
async def latest_prices() -> list[Price]:
    await trio.sleep(1)
    return [Price("ACME", 12.5)]


@server.on_startup
async def start_feed(nursery: trio.Nursery) -> None:
    async def feed() -> None:
        while True:
            for price in await latest_prices():
                await server.publish(f"price:{price.symbol}", price, route=prices)

    nursery.start_soon(feed)  # cancelled at shutdown


# [/background]


# [thread]
def on_price_from_a_sync_library(symbol: str, value: float) -> None:
    # Runs in a thread of a synchronous client library, not in the server's Trio thread.
    server.publish_from_thread(f"price:{symbol}", Price(symbol, value))


# [/thread]


# [registry]
async def alert_admins(text: str) -> int:
    admins = server.registry.filter(lambda ws: ws.context.request.query.get("role") == "admin")
    for ws in admins:
        await ws.send(Price(symbol=text, value=0.0))
    return len(admins)


# [/registry]


# [users]
@attrs.frozen
class Ban:
    user_id: str


@prices.on("ban", Ban)
async def ban(ws: Connection[Price], data: Ban, ctx: Context[None]) -> None:
    # (A route for admins, in real life.) Every tab of that user, on every worker:
    # closed with 3003, and not reconnected.
    await server.disconnect(user=data.user_id, reason="banned")


async def upgraded_to_premium(user_id: str) -> None:
    # Their open connections get the premium feed at once, on every worker (the route's
    # authorize_subscribe is not asked: the server decides).
    await server.subscribe(user=user_id, topic="price:premium")


# [/users]
