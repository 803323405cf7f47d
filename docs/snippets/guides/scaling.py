"""Snippets for the "Scaling out" guide."""

from __future__ import annotations

import os

import attrs

from trio_wsroutes import RedisBroker, WebSocketServer, create_websocket_route, message


@message("message")
@attrs.frozen
class ChatOut:
    user: str
    text: str
    room: str


chat = create_websocket_route("/chat/:room").server_messages(ChatOut)

# [server]
server = WebSocketServer(
    [chat], broker=RedisBroker(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
)
# [/server]


# [cluster]
def cluster_broker() -> RedisBroker:
    # Any of the cluster's nodes; the others are found from its slot map.
    return RedisBroker("redis+cluster://:password@10.0.0.1:7000,10.0.0.2:7000/")


# [/cluster]


# [outside]
async def announce(url: str, updates: list[ChatOut], snapshot: bytes) -> None:
    # One message: connect, publish, disconnect. Returns how many server processes
    # Redis delivered it to; raises ConnectionError if Redis cannot be reached.
    await RedisBroker(url).publish("room:lobby", ChatOut(user="bot", text="hi", room="lobby"))

    # Many: keep the connections open; queued publishes are flushed at exit.
    async with RedisBroker(url) as broker:
        for update in updates:
            await broker.publish(f"room:{update.room}", update)
        await broker.publish_binary("snapshots", snapshot)


# [/outside]
