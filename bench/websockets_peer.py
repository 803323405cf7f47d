"""The websockets peer: the ``websockets`` asyncio server on uvloop, raw (no validation).

Served by ``python bench/servers.py websockets PORT``, one process, as its users run it:
``websockets.asyncio.server.serve`` under ``uvloop.run``, default options (so
permessage-deflate is accepted when a client offers it, and off otherwise).

* ``/echo``: every frame goes back as it came (``recv(decode=False)``, ``send(...,
  text=True)``): no parsing, no validation.
* ``/sub``: the connection joins a set of subscribers when it opens.
* ``/pub``: every frame goes to every subscriber as it came, with
  ``websockets.broadcast()`` (one call per message; no parsing, no validation).

What this shows is what the ``websockets`` protocol and its asyncio server cost on uvloop
when the application does nothing: the upper bound of any application written on them.
"""

from __future__ import annotations

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

subscribers: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else ""
    try:
        if path == "/echo":
            while True:
                await ws.send(await ws.recv(decode=False), text=True)
        elif path == "/pub":
            while True:
                broadcast(subscribers, await ws.recv(decode=False), text=True)
        elif path == "/sub":
            subscribers.add(ws)
            try:
                async for _ in ws:  # subscribers send nothing; this sees the close
                    pass
            finally:
                subscribers.discard(ws)
        else:
            await ws.close(1008, "unknown path")
    except ConnectionClosed:
        pass


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port) as server:
        await server.serve_forever()


def run(port: int) -> None:
    import uvloop

    uvloop.run(main(port))
