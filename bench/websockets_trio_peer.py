"""The websockets Trio peer: the ``websockets`` Trio server, raw (no validation).

Served by ``python bench/servers.py websockets-trio PORT``, one process, as its users run
it: ``websockets.trio.server.serve`` under ``trio.run``, default options (so
permessage-deflate is accepted when a client offers it, and off otherwise).

* ``/echo``: every frame goes back as it came (``recv(decode=False)``, ``send(...,
  text=True)``): no parsing, no validation.
* ``/sub``: the connection joins a set of subscribers when it opens.
* ``/pub``: every frame goes to every subscriber as it came, with
  ``websockets.trio.connection.broadcast()`` (one call per message, awaited before the
  next is read; no parsing, no validation).

It is the same protocol library as the native transport's, on the same event loop (Trio),
with the application doing nothing: what separates the native transport from it is the
engine (validation, the reader, dispatcher and writer tasks, the topic broker), not Trio.
"""

from __future__ import annotations

from functools import partial

import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.connection import broadcast
from websockets.trio.server import ServerConnection, serve

subscribers: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else ""
    try:
        if path == "/echo":
            while True:
                await ws.send(await ws.recv(decode=False), text=True)
        elif path == "/pub":
            while True:
                await broadcast(subscribers, await ws.recv(decode=False), text=True)
        elif path == "/sub":
            subscribers.add(ws)
            try:
                async for _ in ws:  # subscribers send nothing; this sees the close
                    pass
            finally:
                subscribers.discard(ws)
        else:
            await ws.aclose(1008, "unknown path")
    except ConnectionClosed:
        pass


def run(port: int) -> None:
    trio.run(partial(serve, handler, port, host="127.0.0.1"))
