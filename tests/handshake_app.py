"""A small echo server for the tests that run it in a process of their own and look at it
from outside (its memory, whether it is still there): ``/e`` echoes text, and at most 10
connections are admitted.

``python -m tests.handshake_app hypercorn|native [CERTFILE KEYFILE]`` serves it on a free
port of 127.0.0.1 (and prints its URL). Under hypercorn it listens with a backlog of 4096
rather than hypercorn's 100, so that thousands of connections get in quickly.
"""

from __future__ import annotations

import functools
import ssl
import sys
from typing import Any

import trio

from trio_wsroutes import (
    BoundAddress,
    Connection,
    Context,
    WebSocketServer,
    create_websocket_route,
)

route = create_websocket_route("/e")


@route.on_text
async def echo(ws: Connection[Any], text: str, ctx: Context[None]) -> None:
    await ws.send_text(text)


server = WebSocketServer([route], max_connections=10)


def main(transport: str, certfile: str | None = None, keyfile: str | None = None) -> None:
    context: ssl.SSLContext | None = None
    if certfile is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile, keyfile)

    async def run() -> None:
        options: dict[str, Any] = {"ssl_context": context}
        serve = server.serve_native
        if transport == "hypercorn":
            from hypercorn.config import Config

            options["hypercorn_config"] = config = Config()
            config.backlog = 4096
            serve = server.serve
        async with trio.open_nursery() as nursery:
            addresses: list[BoundAddress] = await nursery.start(
                functools.partial(serve, "127.0.0.1", 0, **options)
            )
            print(addresses[0].ws_url, flush=True)

    trio.run(run)


if __name__ == "__main__":
    main(*sys.argv[1:])
