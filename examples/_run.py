"""Shared command line for the examples: ``python -m examples.<name> [--host] [--port]``."""

from __future__ import annotations

import argparse
import contextlib

import trio

from trio_wsroutes import WebSocketServer


def run(server: WebSocketServer, name: str, paths: list[str]) -> None:
    """Serve ``server`` under hypercorn's trio worker and print where to connect."""
    parser = argparse.ArgumentParser(description=f"The {name} example.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(server.serve, args.host, args.port)
            for address in addresses:
                print(f"{name} example running on {address.http_url}/", flush=True)
                for path in paths:
                    print(f"WebSocket endpoint: {address.ws_url}{path}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main)
