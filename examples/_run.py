"""Shared command line for the examples: ``python -m examples.<name> [--host] [--port]``."""

from __future__ import annotations

import argparse
import sys

import trio

from trio_wsroutes import StartupError, WebSocketServer


def run(server: WebSocketServer, name: str, paths: list[str]) -> None:
    """Serve ``server`` under hypercorn's trio worker and print where to connect."""
    main_module = sys.modules["__main__"].__spec__
    prog = f"python -m {main_module.parent}" if main_module else None  # not "__main__.py"
    parser = argparse.ArgumentParser(prog=prog, description=f"The {name} example.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    async def main() -> None:
        # serve() stops on Ctrl+C or SIGTERM: 1001 to every client, then it returns.
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(server.serve, args.host, args.port)
            for address in addresses:
                print(f"{name} example running on {address.http_url}/", flush=True)
                for path in paths:
                    print(f"WebSocket endpoint: {address.ws_url}{path}", flush=True)
            print("Ctrl+C to stop", flush=True)

    try:
        trio.run(main)
    except* StartupError as failed:  # the port is in use, say: one line, not a traceback
        [reason] = [error.strerror for error in failed.exceptions if isinstance(error, OSError)]
        parser.exit(2, f"{parser.prog}: error: {reason}\n")
    print(f"{name} example stopped", flush=True)
