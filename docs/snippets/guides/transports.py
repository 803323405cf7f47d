"""Snippets for the "Transports" guide; run as a script, it serves natively for a moment."""

from __future__ import annotations

import functools

import attrs
import trio

from trio_wsroutes import (
    Connection,
    Context,
    RateLimit,
    WebSocketServer,
    create_websocket_route,
    message,
)


@attrs.frozen
class Say:
    text: str


@message("said")
@attrs.frozen
class Said:
    text: str


# [route-options]
chat = (
    create_websocket_route("/chat")
    .server_messages(Said)
    # 5 messages a second, bursts of 20, and at most 64 KiB a second; over it: 1008.
    .rate_limit(5, burst=20, bytes_per_second=64 * 1024, action="close")
    # For ASGI servers, which hide WebSocket pings: {"type": "ping"} every 25 s, and a
    # client that sends nothing for 10 s after one is closed with 1011.
    .heartbeat(25, timeout=10)
)
# [/route-options]


@chat.on("say", Say)
async def say(ws: Connection[Said], data: Say, ctx: Context[None]) -> Said:
    return Said(data.text)


# [echo-raw]
echo = create_websocket_route("/echo")


@echo.on_text
async def echo_text(ws: Connection[object], text: str, ctx: Context[None]) -> None:
    await ws.send_text(text)  # frames that are not envelopes, as they came


@echo.on_binary
async def echo_binary(ws: Connection[object], data: bytes, ctx: Context[None]) -> None:
    await ws.send_binary(data)


# [/echo-raw]

# [server-options]
server = WebSocketServer(
    [chat, echo],
    compression=True,  # "shared" natively; "context_takeover" or False
    heartbeat_interval=20,  # native: a ping every 20 s...
    heartbeat_timeout=10,  # ...and a peer silent for 10 s after one is dead (1011)
    idle_timeout=120,  # any frame counts, pongs included (native)
    max_payload_length=1024 * 1024,  # 1009, before the payload is read (native)
    rate_limit=RateLimit(50, burst=100),  # for routes without their own
    close_timeout=5,  # also the grace period of a shutdown
)
# [/server-options]


# [serve-native]
async def main() -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        serve = functools.partial(server.serve_native, shutdown_trigger=stop.wait)
        addresses = await nursery.start(serve, "127.0.0.1", 0)
        print("listening on", addresses[0].ws_url)
        stop.set()  # a real server waits for a signal here


# [/serve-native]

if __name__ == "__main__":
    trio.run(main)
