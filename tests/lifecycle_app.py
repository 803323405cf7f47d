"""A minimal app for the lifecycle tests: every connection is greeted with ``hello``."""

from __future__ import annotations

import attrs

from trio_wsroutes import Connection, Context, WebSocketServer, create_websocket_route, message


@message("hello")
@attrs.frozen
class Hello:
    text: str


route = create_websocket_route("/ws").server_messages(Hello)


@route.on_connect
async def hi(ws: Connection[Hello], ctx: Context[None]) -> None:
    await ws.send(Hello("hi"))


server = WebSocketServer([route])
