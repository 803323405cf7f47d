"""A 100 Hz market-data style feed, and what happens to clients that cannot keep up.

A producer publishes a tick every 10 ms to the ``ticks`` topic. The server's
slow-consumer policy is ``"drop"``: a subscriber whose queue would pass the backpressure
limit (256 KiB here) misses ticks instead of slowing anyone down, and ``dropped`` counts
them. The ``stats`` RPC shows a connection its own ``buffered_amount``. For snapshots,
where only the latest value matters, ``send_latest`` shows the usual pattern:
check ``ws.buffered_amount`` and skip a send while the client is behind.
Run: ``python -m examples.live_data`` and connect to ``ws://127.0.0.1:8000/live``.
"""

from __future__ import annotations

import math
import os

import attrs
import trio

from trio_wsroutes import Connection, Context, WebSocketServer, create_websocket_route, message


@attrs.frozen
class Subscribe:
    """Start receiving ticks."""


@attrs.frozen
class StatsRequest:
    """Ask how far behind this connection is."""


@message("tick")
@attrs.frozen
class Tick:
    """One update of the feed."""

    seq: int
    value: float


@message("stats")
@attrs.frozen
class Stats:
    """This connection's queue, as the server sees it."""

    buffered_amount: int
    dropped: int


LiveMessage = Tick | Stats
live = create_websocket_route("/live").server_messages(Tick, Stats)


@live.on("subscribe", Subscribe)
async def subscribe(ws: Connection[LiveMessage], data: Subscribe, ctx: Context[None]) -> None:
    await ws.subscribe("ticks")


@live.on("stats", StatsRequest)
async def stats(ws: Connection[LiveMessage], data: StatsRequest, ctx: Context[None]) -> Stats:
    return Stats(buffered_amount=ws.buffered_amount, dropped=ws.dropped_messages)


SNAPSHOT_SKIP_AT = 64 * 1024


async def send_latest(ws: Connection[LiveMessage], tick: Tick) -> bool:
    """Send ``tick`` unless this client is already behind; returns whether it was sent."""
    if ws.buffered_amount > SNAPSHOT_SKIP_AT:
        return False
    await ws.send(tick)
    return True


server = WebSocketServer([live], slow_consumer_policy="drop", backpressure_limit=256 * 1024)
RATE_HZ = float(os.environ.get("LIVE_DATA_HZ", "100"))


@server.on_startup
async def start_producer(nursery: trio.Nursery) -> None:
    """Publish a tick at ``RATE_HZ``, on a fixed schedule that does not drift."""

    async def producer() -> None:
        period = 1 / RATE_HZ
        start = trio.current_time()
        for seq in range(1 << 62):
            await trio.sleep_until(start + seq * period)
            await server.publish("ticks", Tick(seq=seq, value=math.sin(seq / 50)), route=live)

    nursery.start_soon(producer)
