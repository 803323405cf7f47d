"""An echo server for the Autobahn|Testsuite (RFC 6455 conformance), on either transport.

``/echo`` sends every text and binary message back unchanged (raw text, through
``on_text``; the suite never sends JSON envelopes). Run it, then the suite's
fuzzingclient against ``ws://127.0.0.1:PORT/echo``::

    python bench/autobahn_server.py --native --port 9001
    python bench/autobahn_server.py --port 9002        # hypercorn's trio worker

Stop it with Ctrl+C.
"""

from __future__ import annotations

import argparse
import functools

import trio

from trio_wsroutes import Connection, Context, WebSocketServer, create_websocket_route


def echo_server() -> WebSocketServer:
    echo = create_websocket_route("/echo")

    @echo.on_text
    async def text(ws: Connection[object], data: str, ctx: Context[None]) -> None:
        await ws.send_text(data)

    @echo.on_binary
    async def binary(ws: Connection[object], data: bytes, ctx: Context[None]) -> None:
        await ws.send_binary(data)

    # The suite's largest messages are 16 MiB; it measures conformance, not limits.
    return WebSocketServer([echo], max_payload_length=16 * 1024 * 1024, idle_timeout=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--native", action="store_true", help="the native transport")
    args = parser.parse_args()
    server = echo_server()
    serve = server.serve_native if args.native else server.serve
    trio.run(functools.partial(serve, "127.0.0.1", args.port))


if __name__ == "__main__":
    main()
