"""The Python servers the benchmarks compare, one per process.

    python bench/servers.py SYSTEM PORT

Every system serves the same three WebSocket paths on 127.0.0.1:PORT:

* ``/echo``: ``{"type": "echo", "data": {"text": ...}, "id": ...}`` is validated (``text``
  a string of 1 to 500 characters, ``id`` a string or an integer) and answered with
  ``{"type": "echo", "data": {"text": ...}, "id": ...}``; invalid input gets an error
  envelope and the connection stays open.
* ``/sub``: the connection is subscribed to the topic ``feed`` when it opens.
* ``/pub``: ``{"type": "publish", "data": {"n": int, "user": str, "text": str}}`` is
  validated and ``{"type": "tick", "data": {...}}`` goes to every subscriber of ``feed``.

Systems:

* ``asgi``: trio_wsroutes as an ASGI app under hypercorn's trio worker
  (``server.serve``), attrs schemas, the reply returned from the handler.
* ``native``: the same routes on the native transport (``server.serve_native``).
* ``native-history``: ``native`` with history on the topic (``history={"feed":
  History(size=1000)}``): every delivery carries ``topic``, ``offset`` and ``epoch``, and
  the last 1 000 publications are kept. Not in the default suite; ``bench/history_live.py``
  compares it with ``native``.
* ``native-metrics``: ``native`` with ``metrics=True``, the access log on (JSON lines
  to ``/dev/null``) and the metrics rendered once a second, as a scrape would: what
  observability costs. Not in the default suite; ``bench/run.py --systems
  native,native-metrics`` compares them in one run.
* ``native-tracing``: ``native`` with the ``tracing`` option on, an SDK
  ``TracerProvider`` that samples every span and exports none (the cost of making the
  spans; exporting is the SDK's). Not in the default suite.
* ``native-presence``: ``native`` with presence on the topic (``presence={"feed":
  Presence(info=...)}``): every subscriber is listed with a small info object. Not in the
  default suite; ``bench/presence.py`` compares it with ``native``.
* ``hypercorn``: the floor under ``asgi``: a plain ASGI app on hypercorn's trio worker
  that echoes and forwards the text as it came, no validation, a loop over the
  subscribers' ``send`` for the broadcast.
* ``fastapi``: FastAPI with pydantic (strict models, the same limits) on uvicorn
  (``websockets-sansio``, uvloop, httptools), loop-based broadcast: what a Python user
  would write instead (``bench/fastapi_peer.py``).
* ``websockets``: the ``websockets`` asyncio server on uvloop, raw: ``/echo`` sends each
  frame back as it came and ``/pub`` hands it to ``websockets.broadcast()``, no parsing
  and no validation (``bench/websockets_peer.py``): the protocol library under the native
  transport, with its own asyncio server and nothing on top.
* ``websockets-trio``: the same, on the Trio server of ``websockets``
  (``websockets.trio.server.serve``; ``/pub`` awaits ``broadcast()``)
  (``bench/websockets_trio_peer.py``): the protocol library on the native transport's
  event loop, with nothing on top.

The Bun peer is ``bench/bun/server.ts``; the fan-out floor (a bare Python loop of
``sock.send``) is ``bench/floor.py``. Every server accepts permessage-deflate when a
client offers it (each one's default, except Bun, whose default is off; the floor never
does).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import attrs
import trio
from attrs.validators import max_len, min_len

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trio_wsroutes import (
    Connection,
    Context,
    History,
    Presence,
    WebSocketServer,
    create_websocket_route,
    message,
)

SYSTEMS = (
    "asgi",
    "native",
    "native-history",
    "native-metrics",
    "native-tracing",
    "native-presence",
    "hypercorn",
    "fastapi",
    "websockets",
    "websockets-trio",
)

# -- trio_wsroutes -----------------------------------------------------------------------


@attrs.frozen
class Echo:
    text: str = attrs.field(validator=[min_len(1), max_len(500)])


@message("echo")
@attrs.frozen
class EchoOut:
    text: str


@attrs.frozen
class Publish:
    n: int
    user: str = attrs.field(validator=[min_len(1), max_len(50)])
    text: str = attrs.field(validator=[min_len(1), max_len(500)])


@message("tick")
@attrs.frozen
class Tick:
    n: int
    user: str
    text: str


@attrs.frozen
class Seat:
    name: str


def wsroutes_server(
    *, history: bool = False, presence: bool = False, metrics: bool = False, tracing: bool = False
) -> WebSocketServer:
    """The routes, as a user of this project writes them (default server options; with
    ``history``, the topic keeps its last 1 000 publications; with ``presence``, it lists
    its subscribers, each with a small info object; with ``metrics``, metrics and the
    access log on; with ``tracing``, spans of every upgrade and message, made and
    dropped)."""
    echo = create_websocket_route("/echo").server_messages(EchoOut)

    @echo.on("echo", Echo)
    async def on_echo(ws: Connection[EchoOut], data: Echo, ctx: Context[None]) -> EchoOut:
        return EchoOut(data.text)

    sub = create_websocket_route("/sub").server_messages(Tick)

    @sub.on_connect
    async def joined(ws: Connection[Tick], ctx: Context[None]) -> None:
        await ws.subscribe("feed")

    pub = create_websocket_route("/pub").server_messages(Tick)

    @pub.on("publish", Publish)
    async def on_publish(ws: Connection[Tick], data: Publish, ctx: Context[None]) -> None:
        await ws.publish("feed", Tick(data.n, data.user, data.text))

    if history:
        return WebSocketServer([echo, sub, pub], history={"feed": History(size=1000)})
    if metrics:
        return observed(WebSocketServer([echo, sub, pub], metrics=True))
    if tracing:
        from opentelemetry.sdk.trace import TracerProvider

        return WebSocketServer([echo, sub, pub], tracing=TracerProvider())
    if presence:
        seat = Presence(info=lambda ctx: Seat(f"guest-{ctx.connection_id[:6]}"))
        return WebSocketServer([echo, sub, pub], presence={"feed": seat})
    return WebSocketServer([echo, sub, pub])


def observed(server: WebSocketServer) -> WebSocketServer:
    """``server`` with its access log written (as JSON, to ``/dev/null``) and its metrics
    rendered every second, as Prometheus would scrape them."""
    import logging
    import os

    from trio_wsroutes import JSONFormatter
    from trio_wsroutes._prometheus import render

    handler = logging.FileHandler(os.devnull)
    handler.setFormatter(JSONFormatter())
    access = logging.getLogger("trio_wsroutes.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False

    @server.on_startup
    async def scrape_every_second(nursery: trio.Nursery) -> None:
        async def scrape() -> None:
            while True:
                await trio.sleep(1)
                render(server._observability.scrape())  # pyright: ignore[reportPrivateUsage]

        nursery.start_soon(scrape)

    return server


# -- the plain ASGI app (the floor) -------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_subscribers: set[Send] = set()


async def plain_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            await send({"type": event["type"] + ".complete"})
            if event["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    path = scope["path"]
    if path == "/sub":
        _subscribers.add(send)
    try:
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                return
            text = event.get("text")
            if path == "/pub":
                for subscriber in list(_subscribers):
                    try:
                        await subscriber({"type": "websocket.send", "text": text})
                    except Exception:
                        _subscribers.discard(subscriber)
            else:
                await send({"type": "websocket.send", "text": text})
    finally:
        _subscribers.discard(send)


# -- running -----------------------------------------------------------------------------


def run(system: str, port: int) -> None:
    if system == "asgi":
        trio.run(wsroutes_server().serve, "127.0.0.1", port)
    elif system == "native":
        trio.run(wsroutes_server().serve_native, "127.0.0.1", port)
    elif system == "native-metrics":
        trio.run(wsroutes_server(metrics=True).serve_native, "127.0.0.1", port)
    elif system == "native-history":
        trio.run(wsroutes_server(history=True).serve_native, "127.0.0.1", port)
    elif system == "native-tracing":
        trio.run(wsroutes_server(tracing=True).serve_native, "127.0.0.1", port)
    elif system == "native-presence":
        trio.run(wsroutes_server(presence=True).serve_native, "127.0.0.1", port)
    elif system == "hypercorn":
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.loglevel = "WARNING"
        trio.run(serve, plain_app, config)
    elif system == "fastapi":
        import uvicorn
        from fastapi_peer import app

        uvicorn.run(app, host="127.0.0.1", port=port, ws="websockets-sansio", log_level="warning")
    elif system == "websockets":
        import websockets_peer

        websockets_peer.run(port)
    elif system == "websockets-trio":
        import websockets_trio_peer

        websockets_trio_peer.run(port)
    else:
        raise SystemExit(f"unknown system {system!r}; one of {', '.join(SYSTEMS)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    # Ctrl-C works even when started from a background job (which ignores SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run(sys.argv[1], int(sys.argv[2]))
    except* KeyboardInterrupt:
        pass
