"""A client that reconnects and recovers a large history in a loop: what it costs the
server, and a bystander's echo latency meanwhile, with the default bounds and without.

    python bench/recovery_flood.py [--seconds 5] [--reps 3] [--transport native|hypercorn]

For each configuration a fresh server process runs on core 0 (``taskset``) and the
clients on core 1, on 127.0.0.1. The topic ``room:h`` holds 300 publications of 40 KiB
(11.7 MiB). The attacker connects to ``/topic/room:h`` with the position just before the
oldest kept publication (the largest recovery the server allows it), reads until the
``joined`` message, closes and starts again; the bystander sends an echo request, waits
for the reply, and starts again. Reported per configuration, median of ``--reps``:
the bystander's round-trip p50 and p99 (quiet, then under the flood), recoveries a
second, and the publications and MiB a second the server sent the attacker.

* ``bounded``: the defaults (``History.max_bytes`` 4 MiB, ``max_recovery`` 300,
  ``recovery_rate`` 2000 publications and 8 MiB a second per address).
* ``unbounded``: no byte bound, ``max_recovery`` 10**6, no ``recovery_rate``.

Nothing here is a pass/fail check; the machine's other load moves the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import attrs
import trio
from trio_websocket import open_websocket_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trio_wsroutes import (  # noqa: E402
    Connection,
    Context,
    History,
    WebSocketServer,
    create_websocket_route,
    message,
)

PUBLICATIONS = 300
SIZE = 40 * 1024


@message("said")
@attrs.frozen
class Said:
    n: int
    text: str


@message("joined")
@attrs.frozen
class Joined:
    recovered: bool
    missed: int


@attrs.frozen
class Echo:
    text: str


def make_server(config: str) -> WebSocketServer:
    topic = create_websocket_route("/topic/:name").server_messages(Said, Joined)

    @topic.on_connect
    async def join(ws: Connection[Said | Joined], ctx: Context[None]) -> None:
        recovery = await ws.subscribe(ctx.params["name"])
        await ws.send(Joined(recovery.recovered, recovery.missed))

    echo = create_websocket_route("/echo").server_messages(Said)

    @echo.on("echo", Echo)
    async def on_echo(ws: Connection[Said], data: Echo, ctx: Context[None]) -> Said:
        return Said(0, data.text)

    if config == "bounded":
        return WebSocketServer([topic, echo], history={"room:*": History(size=PUBLICATIONS)})
    return WebSocketServer(
        [topic, echo],
        history={"room:*": History(size=PUBLICATIONS, max_bytes=None)},
        max_recovery=10**6,
        recovery_rate=None,
    )


def serve(config: str, transport: str, port: int) -> None:
    server = make_server(config)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                (server.serve_native if transport == "native" else server.serve),
                "127.0.0.1",
                port,
            )
            for n in range(PUBLICATIONS):
                await server.publish("room:h", Said(n, "h" * SIZE))
            page = await server.history("room:h")
            oldest = page.publications[0].position
            # The attacker's position: just before the oldest publication kept.
            print("ready", f"{oldest.epoch}:{oldest.offset - 1}", flush=True)

    trio.run(main)


async def percentiles(url: str, seconds: float) -> tuple[float, float]:
    times: list[float] = []
    async with open_websocket_url(url) as ws:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await ws.send_message('{"type":"echo","id":1,"data":{"text":"hi"}}')
            await ws.get_message()
            times.append(time.perf_counter() - started)
    times.sort()
    return times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000


async def flood(base: str, since: str, seconds: float) -> dict[str, float]:
    query = "?since=" + quote(f"room:h@{since}", safe="")
    recoveries = publications = 0
    size = 0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        async with open_websocket_url(
            f"{base}/topic/room:h{query}", message_queue_size=100_000, max_message_size=2**25
        ) as ws:
            while True:
                text = await ws.get_message()
                body = json.loads(text)
                if body["type"] == "joined":
                    recoveries += body["data"]["recovered"]
                    break
                publications += 1
                size += len(text)
    return {
        "recoveries_per_s": recoveries / seconds,
        "publications_per_s": publications / seconds,
        "mib_per_s": size / seconds / 2**20,
    }


def measure(config: str, transport: str, seconds: float, port: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            __file__,
            "--serve",
            config,
            "--port",
            str(port),
            "--transport",
            transport,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().split()
        assert line[0] == "ready", line
        since = line[1]
        os.sched_setaffinity(0, {1})
        base = f"ws://127.0.0.1:{port}"

        async def main() -> dict[str, float]:
            quiet = await percentiles(f"{base}/echo", seconds)
            results: dict[str, float] = {}
            async with trio.open_nursery() as nursery:

                async def attack() -> None:
                    results.update(await flood(base, since, seconds))

                nursery.start_soon(attack)
                loud = await percentiles(f"{base}/echo", seconds)
            return {
                "quiet_p50_ms": quiet[0],
                "quiet_p99_ms": quiet[1],
                "flood_p50_ms": loud[0],
                "flood_p99_ms": loud[1],
                **results,
            }

        return trio.run(main)
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--transport", default="native", choices=("native", "hypercorn"))
    parser.add_argument("--serve", choices=("bounded", "unbounded"))
    parser.add_argument("--port", type=int, default=9301)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.transport, args.port)
        return
    rows: dict[str, list[dict[str, float]]] = {"bounded": [], "unbounded": []}
    for rep in range(args.reps):
        for config in rows:  # interleaved
            rows[config].append(measure(config, args.transport, args.seconds, args.port + rep))
    for config, runs in rows.items():
        medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(config, args.transport, json.dumps({k: round(v, 2) for k, v in medians.items()}))


if __name__ == "__main__":
    main()
