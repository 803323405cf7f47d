"""Fan-out throughput: one publisher, many subscribers, messages delivered per second.

The server (trio_wsroutes, native transport or hypercorn) runs in its own process pinned
to core 0 and publishes small messages to one topic as fast as its subscribers take
them; the subscribers are picows clients (Cython) pinned to core 1 that count frames.
127.0.0.1 only, bounded in time.

    python bench/fanout.py                      # native and hypercorn, 200 subscribers
    python bench/fanout.py --subscribers 50 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_server(kind: str, port: int, subscribers: int) -> None:
    import attrs
    import trio

    from trio_wsroutes import Connection, Context, WebSocketServer, create_websocket_route, message

    @message("tick")
    @attrs.frozen
    class Tick:
        n: int
        text: str

    route = create_websocket_route("/feed").server_messages(Tick)

    @route.on_connect
    async def join(ws: Connection[Tick], ctx: Context[None]) -> None:
        await ws.subscribe("feed")

    server = WebSocketServer([route], compression=False, slow_consumer_policy="drop")

    @server.on_startup
    async def publisher(nursery: trio.Nursery) -> None:
        async def run() -> None:
            while server.subscriber_count("feed") < subscribers:  # noqa: ASYNC110
                await trio.sleep(0.05)
            n = 0
            while True:
                n += 1
                await server.publish("feed", Tick(n, "x" * 40))
                # Keep queues short: the point is delivery, not buffering.
                if n % 64 == 0:
                    while any(c.buffered_amount > 64 * 1024 for c in server.registry):  # noqa: ASYNC110
                        await trio.sleep(0.001)

        nursery.start_soon(run)

    if kind == "native":
        trio.run(server.serve_native, "127.0.0.1", port)
    else:
        trio.run(server.serve, "127.0.0.1", port)


async def load(port: int, subscribers: int, seconds: float) -> float:
    import picows

    counts = [0] * subscribers

    class Counter(picows.WSListener):  # type: ignore[misc]
        def __init__(self, index: int) -> None:
            self.index = index

        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            counts[self.index] += 1

    transports = []
    for index in range(subscribers):
        transport, _ = await picows.ws_connect(
            lambda index=index: Counter(index), f"ws://127.0.0.1:{port}/feed"
        )
        transports.append(transport)
    await asyncio.sleep(1.0)  # warm-up
    start_count, start = sum(counts), time.perf_counter()
    await asyncio.sleep(seconds)
    rate = (sum(counts) - start_count) / (time.perf_counter() - start)
    for transport in transports:
        transport.disconnect()
    return rate


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


def measure(kind: str, subscribers: int, seconds: float) -> float:
    port = free_port()
    pin = ["taskset", "-c", "0"] if (os.cpu_count() or 1) > 1 else []
    server = subprocess.Popen(
        [
            *pin,
            sys.executable,
            __file__,
            "--serve",
            kind,
            "--port",
            str(port),
            "--subscribers",
            str(subscribers),
        ],
        cwd=ROOT,
    )
    try:
        wait_for_port(port)
        if pin:
            os.sched_setaffinity(0, {1})
        return asyncio.run(load(port, subscribers, seconds))
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", choices=["native", "hypercorn"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve, args.port, args.subscribers)
        return
    for kind in ("native", "hypercorn"):
        rate = measure(kind, args.subscribers, args.seconds)
        print(f"{kind:<10} {args.subscribers} subscribers: {rate:>12,.0f} messages delivered/s")


if __name__ == "__main__":
    main()
