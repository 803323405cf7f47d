"""Snippets for the "Backpressure and slow consumers" guide."""

from __future__ import annotations

import attrs
import trio

from trio_wsroutes import Connection, Context, WebSocketServer, create_websocket_route, message


@message("frame")
@attrs.frozen
class VideoFrame:
    seq: int
    data: str


@attrs.frozen
class Play:
    frames: int


video = create_websocket_route("/video").server_messages(VideoFrame)


# [send-waits]
@video.on("play", Play)
async def play(ws: Connection[VideoFrame], data: Play, ctx: Context[None]) -> None:
    for seq in range(data.frames):
        # Waits while more than backpressure_limit bytes are queued for this client:
        # a slow client slows this loop down instead of filling the server's memory.
        await ws.send(VideoFrame(seq, "..."))


# [/send-waits]


# [skip-when-behind]
async def send_snapshot(ws: Connection[VideoFrame], frame: VideoFrame) -> bool:
    if ws.buffered_amount > 256 * 1024:
        return False  # the client is behind; the next snapshot will do
    await ws.send(frame)
    return True


# [/skip-when-behind]

# [policy]
server = WebSocketServer(
    [video],
    backpressure_limit=1024 * 1024,  # per connection, in bytes
    slow_consumer_policy="drop",  # or "close" (default): 1013 for subscribers over it
)
# [/policy]


async def watch_stats() -> None:
    # [stats]
    while True:
        await trio.sleep(60)
        stats = server.stats
        print(f"open={stats.connections_open} dropped={stats.messages_dropped}")
    # [/stats]
