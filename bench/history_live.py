"""History on a real server: what it costs a fan-out, what a kept publication weighs, and
how long a client takes to recover the publications it missed.

    python bench/history_live.py [--reps 3] [--seconds 2] [--subscribers 200]
                                 [--topics 20] [--retained 1000] [--missed 1000]

Every measurement starts a fresh server process pinned to core 0, with the clients on
the other core(s), as ``run.py`` does (127.0.0.1 only, every wait bounded):

* **fan-out, history off and on**: ``run.py``'s fan-out scenario (``--subscribers`` picows
  subscribers on ``/sub``, one publisher pacing on their receipts) against ``servers.py
  native`` and ``native-history`` (the same app with ``history={"feed":
  History(size=1000)}``), alternating, ``--reps`` runs each: deliveries per second, the
  server's CPU, and server CPU microseconds per delivery.
* **memory per kept publication**: a native server (this file, ``serve``) with history on
  ``m:*``. Its RSS after ``--topics`` x ``--retained`` publications of about 200 bytes on
  topics with history, minus its RSS after as many on topics without history (so what
  publishing itself leaves behind cancels out), per kept publication.
* **recovery**: ``--missed`` publications on a topic nobody listens to, then a client
  connects with ``since=TOPIC@EPOCH:OFFSET`` (URL-encoded) from before them; the time from
  opening the TCP connection until it has every one of them and the app's ``joined``
  message, against the same with nothing missed (medians of ``--reps``).

The machine's other load moves these numbers; ``run.py`` flags runs where other processes
used the measured cores. Nothing here is a pass/fail check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import harness
import picows
import run
import trio
from picows import WSFrame, WSListener, WSMsgType, WSTransport

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trio_wsroutes import (
    Connection,
    Context,
    History,
    WebSocketServer,
    create_websocket_route,
    message,
)

TEXT = "x" * 150  # a Tick is about 200 bytes on the wire

# -- the server (python bench/history_live.py serve PORT RETAINED MISSED) ----------------------


@attrs.frozen
class PublishTo:
    topic: str
    n: int
    text: str


@message("tick")
@attrs.frozen
class Tick:
    n: int
    text: str


@message("joined")
@attrs.frozen
class Joined:
    recovered: bool
    missed: int
    epoch: str
    offset: int


def history_server(retained: int, missed: int) -> WebSocketServer:
    """``/pub`` publishes to any topic (an ``id`` gets an ack once it is published);
    ``/sub/{topic}`` subscribes on connect, resuming from the client's ``since``, and
    sends ``joined``: what ``subscribe`` returned and the topic's position."""
    pub = create_websocket_route("/pub").server_messages(Tick)

    @pub.on("publish", PublishTo)
    async def publish(ws: Connection[Tick], data: PublishTo, ctx: Context[None]) -> None:
        await ws.publish(data.topic, Tick(data.n, data.text))

    sub = create_websocket_route("/sub/:topic").server_messages(Tick, Joined)

    @sub.on_connect
    async def join(ws: Connection[Tick | Joined], ctx: Context[None]) -> None:
        topic = ctx.params["topic"]
        recovery = await ws.subscribe(topic)
        position = (await server.history(topic, limit=0)).position
        await ws.send(Joined(recovery.recovered, recovery.missed, position.epoch, position.offset))

    history = {"m:*": History(size=retained), "r:*": History(size=max(missed, 1))}
    server = WebSocketServer([pub, sub], history=history)
    return server


def serve(port: int, retained: int, missed: int) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        trio.run(history_server(retained, missed).serve_native, "127.0.0.1", port)
    except* KeyboardInterrupt:
        pass


# -- clients (picows on asyncio, as the load generator) ---------------------------------------


class Collector(WSListener):  # type: ignore[misc]
    """Counts ``tick`` frames until ``want`` of them and the ``joined`` message arrived."""

    def __init__(self, want: int, done: asyncio.Future[float]) -> None:
        self.want = want
        self.done = done
        self.count = 0
        self.joined: dict[str, Any] | None = None
        self.acks = 0

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_bytes()
        if payload.startswith(b'{"type":"tick"'):
            self.count += 1
        elif payload.startswith(b'{"type":"joined"'):
            self.joined = json.loads(payload)["data"]
        elif payload.startswith(b'{"type":"ack"'):
            self.acks += 1
        if (
            (self.joined is not None or self.acks)
            and self.count >= self.want
            and not self.done.done()
        ):
            self.done.set_result(time.perf_counter())


async def connect(url: str, want: int) -> tuple[WSTransport, Collector, asyncio.Future[float]]:
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    collector = Collector(want, done)
    transport, _ = await picows.ws_connect(lambda: collector, url)
    return transport, collector, done


async def publish_all(port: int, topics: list[str], per_topic: int) -> None:
    """Publish ``per_topic`` ticks on each topic, pipelined, then wait for the ack of a
    last one (handlers run in order: everything before it is published)."""
    transport, _, done = await connect(f"ws://127.0.0.1:{port}/pub", 0)
    text = TEXT
    for n in range(per_topic):
        for topic in topics:
            body = {"type": "publish", "data": {"topic": topic, "n": n, "text": text}}
            transport.send(WSMsgType.TEXT, json.dumps(body).encode())
    last = {"type": "publish", "data": {"topic": "n:last", "n": 0, "text": ""}, "id": 1}
    transport.send(WSMsgType.TEXT, json.dumps(last).encode())
    await asyncio.wait_for(done, 120)
    transport.disconnect()


async def position(port: int, topic: str) -> tuple[str, int]:
    transport, collector, done = await connect(f"ws://127.0.0.1:{port}/sub/{topic}", 0)
    await asyncio.wait_for(done, 30)
    transport.disconnect()
    assert collector.joined is not None
    return collector.joined["epoch"], collector.joined["offset"]


async def timed_resume(port: int, topic: str, epoch: str, offset: int, want: int) -> float:
    """Seconds from opening the connection (with ``since``) until ``want`` ticks and the
    ``joined`` message arrived."""
    since = quote(f"{topic}@{epoch}:{offset}", safe="")
    started = time.perf_counter()
    transport, collector, done = await connect(
        f"ws://127.0.0.1:{port}/sub/{topic}?since={since}", want
    )
    finished = await asyncio.wait_for(done, 60)
    transport.disconnect()
    assert collector.joined is not None
    assert collector.joined["recovered"], collector.joined
    assert collector.joined["missed"] == want, (collector.joined, want)
    assert collector.count == want
    return finished - started


# -- the measurements ---------------------------------------------------------------------------


def fan_out(args: argparse.Namespace, pinning: harness.Pinning) -> dict[str, Any]:
    mode = run.Mode(reps=args.reps, warmup=0.5, seconds=args.seconds, idle_connections=0)
    scenario = run.Scenario("fanout-history", "fanout", "deliveries/s", args.subscribers)
    runs: dict[str, list[run.Run]] = {"native": [], "native-history": []}
    for rep in range(args.reps):
        order = ["native", "native-history"] if rep % 2 == 0 else ["native-history", "native"]
        for system in order:
            runs[system].append(run.measure(system, scenario, rep, mode, pinning, 1))
    out: dict[str, Any] = {}
    for system, done in runs.items():
        good = [r for r in done if r.value and r.server_cpu and not r.error]
        if not good:
            out[system] = {"error": [r.error for r in done]}
            continue
        # Runs where other processes used the measured cores are left out when any run
        # was left alone (a shared machine moves these numbers by a factor of several).
        quiet = [r for r in good if not r.disturbed]
        good = quiet or good
        rates = [r.value or 0.0 for r in good]
        cpu_us = [(r.server_cpu or 0.0) / (r.value or 1.0) * 1e6 for r in good]
        out[system] = {
            "deliveries_per_s": statistics.median(rates),
            "runs": [round(r, 1) for r in rates],
            "server_cpu": statistics.median(r.server_cpu or 0.0 for r in good),
            "server_cpu_us_per_delivery": statistics.median(cpu_us),
            "disturbed": sum(r.disturbed for r in done),
            "disturbed_left_out": bool(quiet) and len(quiet) < len(done),
            "client_limited": sum(r.client_limited for r in done),
        }
    return out


def with_server(args: argparse.Namespace, pinning: harness.Pinning, body: Any) -> dict[str, Any]:
    port = harness.free_port()
    command = harness.python_command(
        "history_live.py", "serve", str(port), str(args.retained), str(args.missed)
    )
    with harness.server_process(command, port, pinning) as server:
        time.sleep(0.3)
        result: dict[str, Any] = asyncio.run(body(port, server.pid))
        return result


def memory(args: argparse.Namespace, pinning: harness.Pinning) -> dict[str, Any]:
    topics = args.topics
    kept = topics * args.retained

    async def body(port: int, pid: int) -> dict[str, Any]:
        # Warm the code paths (and the allocator) with both kinds of topic first.
        await publish_all(port, ["n:warm", "m:warm"], 200)
        baseline = run.settle_rss(pid)
        await publish_all(port, [f"n:{i}" for i in range(topics)], args.retained)
        control = run.settle_rss(pid)
        await publish_all(port, [f"m:{i}" for i in range(topics)], args.retained)
        loaded = run.settle_rss(pid)
        return {
            "kept_publications": kept,
            "payload_bytes": len(b'{"type":"tick","data":{"n":999,"text":""}}') + len(TEXT),
            "rss_baseline_mib": round(baseline / 2**20, 1),
            "rss_after_without_history_mib": round(control / 2**20, 1),
            "rss_after_with_history_mib": round(loaded / 2**20, 1),
            "bytes_per_kept_publication": (loaded - control) / kept,
        }

    return with_server(args, pinning, body)


def recovery(args: argparse.Namespace, pinning: harness.Pinning) -> dict[str, Any]:
    missed = args.missed

    async def body(port: int, pid: int) -> dict[str, Any]:
        recover: list[float] = []
        nothing: list[float] = []
        for rep in range(args.reps):
            topic = f"r:{rep}"
            epoch, before = await position(port, topic)
            await publish_all(port, [topic], missed)
            await timed_resume(port, topic, epoch, before, missed)  # warm this topic's path
            _, after = await position(port, topic)
            assert after == before + missed, (before, after)
            recover.append(await timed_resume(port, topic, epoch, before, missed))
            nothing.append(await timed_resume(port, topic, epoch, after, 0))
        return {
            "missed": missed,
            "recovery_ms": statistics.median(recover) * 1000,
            "recovery_runs_ms": [round(t * 1000, 2) for t in recover],
            "nothing_missed_ms": statistics.median(nothing) * 1000,
            "per_publication_us": (statistics.median(recover) - statistics.median(nothing))
            / missed
            * 1e6,
        }

    return with_server(args, pinning, body)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--topics", type=int, default=20)
    parser.add_argument("--retained", type=int, default=1000)
    parser.add_argument("--missed", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "history.json")
    parser.add_argument(
        "--only", choices=("fanout", "memory", "recovery"), help="one measurement only"
    )
    args = parser.parse_args()
    pinning = harness.Pinning.detect()
    harness.raise_fd_limit()
    if pinning.enabled:
        os.sched_setaffinity(0, set(pinning.clients))  # this process mostly waits
    print(f"{pinning.describe()}; load average {harness.machine()['loadavg_at_start']:.2f}")
    results: dict[str, Any] = {"machine": harness.machine(), "pinning": pinning.describe()}
    if args.only in (None, "fanout"):
        results["fanout"] = fan_out(args, pinning)
        for system, line in results["fanout"].items():
            if "error" in line:
                print(f"fan-out {system}: {line['error']}")
                continue
            print(
                f"fan-out {args.subscribers} {system:<15} {line['deliveries_per_s']:>10,.0f}"
                f" deliveries/s, server CPU {line['server_cpu']:.0%},"
                f" {line['server_cpu_us_per_delivery']:.2f} us CPU/delivery (runs {line['runs']},"
                f" {line['disturbed']} disturbed, {line['client_limited']} client-limited)"
            )
    if args.only in (None, "memory"):
        results["memory"] = line = memory(args, pinning)
        print(
            f"memory: {line['bytes_per_kept_publication']:,.0f} bytes per kept publication"
            f" ({line['kept_publications']:,} kept, payloads of {line['payload_bytes']} bytes;"
            f" RSS {line['rss_after_without_history_mib']} -> "
            f"{line['rss_after_with_history_mib']} MiB)"
        )
    if args.only in (None, "recovery"):
        results["recovery"] = line = recovery(args, pinning)
        print(
            f"recovery of {line['missed']:,} missed: {line['recovery_ms']:.1f} ms from TCP"
            f" connect to the last one (nothing missed: {line['nothing_missed_ms']:.1f} ms;"
            f" {line['per_publication_us']:.1f} us per recovered publication;"
            f" runs {line['recovery_runs_ms']})"
        )
    results["machine"]["loadavg_at_end"] = os.getloadavg()[0]
    harness.write_json(args.out, results)
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
