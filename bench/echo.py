"""Echo throughput: trio_wsroutes on hypercorn against a bare ASGI echo app on hypercorn,
and trio_wsroutes on its native transport (``serve_native``).

Runs each server in its own process pinned to core 0 and a load generator (picows, a
Cython client, when installed; else the ``websockets`` asyncio client) pinned to core 1;
127.0.0.1 only, bounded in time.

    python bench/echo.py                 # both servers, table of msgs/s
    python bench/echo.py --seconds 10 --connections 50
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
PAYLOAD = '{"type":"echo","data":{"text":"%s"},"id":1}' % ("x" * 60)


# -- servers -------------------------------------------------------------------------------


async def bare_echo(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            await send({"type": event["type"] + ".complete"})
            if event["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": event.get("text")})


def routes_echo():  # type: ignore[no-untyped-def]
    import attrs

    from trio_wsroutes import Connection, Context, WebSocketServer, create_websocket_route, message

    @attrs.frozen
    class Echo:
        text: str

    @message("echo")
    @attrs.frozen
    class EchoOut:
        text: str

    route = create_websocket_route("/echo").server_messages(EchoOut)

    @route.on("echo", Echo)
    async def echo(ws: Connection[EchoOut], data: Echo, ctx: Context[None]) -> EchoOut:
        return EchoOut(data.text)

    return WebSocketServer([route])


def run_server(kind: str, port: int) -> None:
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    if kind == "native":
        server = routes_echo()
        trio.run(server.serve_native, "127.0.0.1", port)
        return
    app = bare_echo if kind == "bare" else routes_echo()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    trio.run(serve, app, config)


# -- load generator ----------------------------------------------------------------------------


async def load(port: int, connections: int, seconds: float) -> float:
    try:
        import picows  # noqa: F401 - a Cython client: the generator must not be the limit
    except ImportError:
        return await load_websockets(port, connections, seconds)
    return await load_picows(port, connections, seconds)


async def load_picows(port: int, connections: int, seconds: float) -> float:
    import picows

    counts = [0] * connections
    deadline = time.perf_counter() + seconds
    done = asyncio.get_running_loop().create_future()
    finished = 0

    class Echo(picows.WSListener):  # type: ignore[misc]
        def __init__(self, index: int) -> None:
            self.index = index

        def on_ws_connected(self, transport: picows.WSTransport) -> None:
            self.transport = transport
            transport.send(picows.WSMsgType.TEXT, PAYLOAD.encode())

        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            nonlocal finished
            counts[self.index] += 1
            if time.perf_counter() < deadline:
                transport.send(picows.WSMsgType.TEXT, PAYLOAD.encode())
            else:
                transport.send_close()
                transport.disconnect()
                finished += 1
                if finished == connections and not done.done():
                    done.set_result(None)

    start = time.perf_counter()
    for index in range(connections):
        await picows.ws_connect(lambda index=index: Echo(index), f"ws://127.0.0.1:{port}/echo")
    await asyncio.wait_for(done, seconds + 30)
    return sum(counts) / (time.perf_counter() - start)


async def load_websockets(port: int, connections: int, seconds: float) -> float:
    import websockets

    counts = [0] * connections
    deadline = time.perf_counter() + seconds

    async def client(index: int) -> None:
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/echo", compression=None, max_size=None
        ) as ws:
            while time.perf_counter() < deadline:
                await ws.send(PAYLOAD)
                await ws.recv()
                counts[index] += 1

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(connections)))
    return sum(counts) / (time.perf_counter() - start)


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


def measure(kind: str, connections: int, seconds: float) -> float:
    port = free_port()
    pin = ["taskset", "-c", "0"] if os.cpu_count() and os.cpu_count() > 1 else []
    server = subprocess.Popen(
        [*pin, sys.executable, __file__, "--serve", kind, "--port", str(port)], cwd=ROOT
    )
    try:
        wait_for_port(port)
        if pin:
            os.sched_setaffinity(0, {1})
        asyncio.run(load(port, connections, 1.0))  # warm-up
        return asyncio.run(load(port, connections, seconds))
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", choices=["bare", "routes", "native"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve, args.port)
        return
    results: dict[str, list[float]] = {"bare": [], "routes": [], "native": []}
    for _ in range(args.rounds):
        for kind in results:
            results[kind].append(measure(kind, args.connections, args.seconds))
    bare = max(results["bare"])
    routes = max(results["routes"])
    print(f"{'server':<40} {'echo msgs/s (best of ' + str(args.rounds) + ')':>28}")
    print(f"{'bare ASGI echo on hypercorn-trio':<40} {bare:>28,.0f}")
    native = max(results["native"])
    print(f"{'trio_wsroutes validated echo':<40} {routes:>28,.0f}")
    print(f"{'trio_wsroutes validated echo, native':<40} {native:>28,.0f}")
    print(f"ratio (hypercorn mode / bare): {routes / bare:.2f}")
    print(f"ratio (native / bare hypercorn): {native / bare:.2f}")
    print(f"all runs: {results}")


if __name__ == "__main__":
    main()
