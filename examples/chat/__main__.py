"""``python -m examples.chat [--host H] [--port P]``: serve the chat example."""

from __future__ import annotations

import argparse

import trio

from .app import server


async def main(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(server.serve, host, port)
        for address in addresses:
            print(f"Chat example running: open {address.http_url}/ in your browser", flush=True)
            print(f"WebSocket endpoint: {address.ws_url}/chat/<room>", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    try:
        trio.run(main, args.host, args.port)
    except KeyboardInterrupt:
        pass
