"""Soak: many connections joining and leaving, mixed valid and invalid traffic, slow readers.

Runs a real server (hypercorn's trio worker) and its clients in one Trio run on
127.0.0.1, for a fixed time, then checks:

* every subscriber that stayed connected got every message published to its topic after
  it subscribed, in order, none twice;
* open file descriptors, Trio tasks and the registry return to their baseline, and RSS
  grows by no more than a bound once everything has closed;
* the server answered every bad input with an error envelope or a defined close code.

``python bench/soak.py --seconds 60 --churners 200`` prints a JSON report; the test
suite runs a small version (``tests/test_soak.py``).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import random
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness

from trio_wsroutes import (
    BoundAddress,
    Connection,
    Context,
    WebSocketServer,
    create_websocket_route,
    message,
)

TOPICS = ("t0", "t1", "t2", "t3")
PAD = "p" * 1000  # so that readers that stop reading pass the backpressure limit
BAD_INPUTS = [
    "not json",
    "[1, 2]",
    '{"type": 5}',
    '{"type": "nope"}',
    '{"type": "echo", "data": {"text": 5}}',
    '{"type": "echo", "data": null}',
    '{"type": "echo", "id": 1.5}',
    "[" * 5000 + "]" * 5000,
    '{"type": "echo", "data": {"text": "\\ud800"}}',
]


@attrs.frozen
class Sub:
    topic: str


@attrs.frozen
class Echo:
    text: str


@message("subscribed")
@attrs.frozen
class Subscribed:
    topic: str
    after: int


@message("item")
@attrs.frozen
class Item:
    topic: str
    seq: int
    pad: str = ""


@message("echo")
@attrs.frozen
class EchoOut:
    text: str


SoakMessage = Subscribed | Item | EchoOut


def make_server(seqs: dict[str, int]) -> WebSocketServer:
    route = create_websocket_route("/soak").server_messages(Subscribed, Item, EchoOut)

    @route.on("sub", Sub)
    async def sub(ws: Connection[SoakMessage], data: Sub, ctx: Context[None]) -> Subscribed:
        await ws.subscribe(data.topic)
        # No checkpoint between subscribing and reading the counter: the publisher runs
        # in this Trio thread, so the reply names exactly where this subscriber starts.
        return Subscribed(topic=data.topic, after=seqs[data.topic])

    @route.on("echo", Echo)
    async def echo(ws: Connection[SoakMessage], data: Echo, ctx: Context[None]) -> EchoOut:
        return EchoOut(data.text)

    return WebSocketServer([route], backpressure_limit=64 * 1024, idle_timeout=600)


def sub_message(topic: str, request_id: int | None = None) -> str:
    envelope: dict[str, Any] = {"type": "sub", "data": {"topic": topic}}
    if request_id is not None:
        envelope["id"] = request_id
    return orjson.dumps(envelope).decode()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kib() -> int:
    return harness.rss_bytes() // 1024


def count_tasks() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(child) for n in task.child_nurseries for child in n.child_tasks)

    return walk(trio.lowlevel.current_root_task())


@attrs.define
class Report:
    seconds: float
    stayers: int = 0
    churn_connections: int = 0
    slow_readers: int = 0
    published: int = 0
    delivered: int = 0
    gaps: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    bad_inputs_sent: int = 0
    bad_inputs_unanswered: int = 0
    close_codes: dict[str, int] = attrs.Factory(dict)
    fds_before: int = 0
    fds_after: int = 0
    tasks_before: int = 0
    tasks_after: int = 0
    rss_before_kib: int = 0
    rss_peak_kib: int = 0
    rss_after_kib: int = 0
    registry_after: int = 0
    subscribers_after: int = 0
    server_stats: dict[str, int] = attrs.Factory(dict)

    def failures(self, rss_slack_kib: int) -> list[str]:
        problems = []
        if self.gaps or self.duplicates or self.out_of_order:
            problems.append(
                f"delivery: {self.gaps} gaps, {self.duplicates} duplicates, "
                f"{self.out_of_order} out of order"
            )
        if self.bad_inputs_unanswered:
            problems.append(f"{self.bad_inputs_unanswered} bad inputs got no defined answer")
        if self.fds_after > self.fds_before:
            problems.append(f"fds {self.fds_before} -> {self.fds_after}")
        if self.tasks_after > self.tasks_before:
            problems.append(f"tasks {self.tasks_before} -> {self.tasks_after}")
        if self.registry_after or self.subscribers_after:
            problems.append("connections or subscriptions left behind")
        if self.rss_after_kib - self.rss_before_kib > rss_slack_kib:
            problems.append(f"RSS {self.rss_before_kib} -> {self.rss_after_kib} KiB")
        return problems


async def soak(
    seconds: float = 5.0,
    stayers: int = 20,
    churners: int = 20,
    slow_readers: int = 4,
    publish_interval: float = 0.002,
    seed: int = 1,
    serve: Callable[..., Awaitable[None]] | None = None,
) -> Report:
    """Run the soak; ``serve(server, task_status=...)`` starts the server (hypercorn by
    default) and reports its ``BoundAddress`` list."""
    rng = random.Random(seed)
    report = Report(seconds=seconds)
    gc.collect()
    report.fds_before = open_fds()
    report.tasks_before = count_tasks()
    report.rss_before_kib = rss_kib()
    seqs = dict.fromkeys(TOPICS, 0)
    server = make_server(seqs)
    stop_server = trio.Event()

    async def default_serve(srv: WebSocketServer, task_status: Any) -> None:
        await srv.serve("127.0.0.1", 0, shutdown_trigger=stop_server.wait, task_status=task_status)

    start = serve or default_serve
    results: list[tuple[str, int, list[int]]] = []
    finished = trio.Event()

    def count_close(code: int | None) -> None:
        key = str(code)
        report.close_codes[key] = report.close_codes.get(key, 0) + 1

    async with trio.open_nursery() as nursery:
        addresses: list[BoundAddress] = await nursery.start(start, server)
        url = f"{addresses[0].ws_url}/soak"
        ready = 0
        all_ready = trio.Event()

        async def stayer(index: int) -> None:
            nonlocal ready
            topic = TOPICS[index % len(TOPICS)]
            async with open_websocket_url(url, disconnect_timeout=2) as ws:
                await ws.send_message(sub_message(topic, request_id=1))
                first = orjson.loads(await ws.get_message())
                after = first["data"]["after"]
                ready += 1
                if ready == stayers:
                    all_ready.set()
                got: list[int] = []
                while True:
                    message = orjson.loads(await ws.get_message())
                    if message["type"] == "item":
                        if message["data"]["seq"] < 0:
                            break
                        got.append(message["data"]["seq"])
                results.append((topic, after, got))

        async def churner() -> None:
            while not finished.is_set():
                report.churn_connections += 1
                try:
                    async with open_websocket_url(url, disconnect_timeout=2) as ws:
                        for _ in range(rng.randint(1, 6)):
                            roll = rng.random()
                            if roll < 0.5:
                                bad = rng.choice(BAD_INPUTS)
                                report.bad_inputs_sent += 1
                                await ws.send_message(bad)
                                answer = orjson.loads(await ws.get_message())
                                if answer.get("type") != "error" or "code" not in answer:
                                    report.bad_inputs_unanswered += 1
                            elif roll < 0.6:
                                report.bad_inputs_sent += 1
                                await ws.send_message(b"\x00binary")
                                await ws.get_message()  # only a close can come back
                                report.bad_inputs_unanswered += 1
                            else:
                                await ws.send_message('{"type": "echo", "data": {"text": "x"}}')
                                answer = orjson.loads(await ws.get_message())
                                if answer.get("type") != "echo":
                                    report.bad_inputs_unanswered += 1
                            await trio.sleep(rng.random() * 0.02)
                        if rng.random() < 0.5:
                            # Join a topic just before leaving: subscriptions must not
                            # outlive the connection.
                            topic = rng.choice(TOPICS)
                            await ws.send_message(sub_message(topic))
                except ConnectionClosed as closed:
                    count_close(closed.reason.code)
                await trio.sleep(rng.random() * 0.01)

        async def slow_reader() -> None:
            report.slow_readers += 1
            try:
                async with open_websocket_url(url, disconnect_timeout=2) as ws:
                    for topic in TOPICS:
                        await ws.send_message(sub_message(topic))
                    await finished.wait()  # never reads: evicted with 1013
            except ConnectionClosed as closed:
                count_close(closed.reason.code)

        async with trio.open_nursery() as clients:
            for index in range(stayers):
                clients.start_soon(stayer, index)
            with trio.fail_after(30):
                await all_ready.wait()
            for _ in range(churners):
                clients.start_soon(churner)
            for _ in range(slow_readers):
                clients.start_soon(slow_reader)
            end = trio.current_time() + seconds
            while trio.current_time() < end:
                topic = rng.choice(TOPICS)
                seqs[topic] += 1
                await server.publish(topic, Item(topic, seqs[topic], PAD))
                report.published += 1
                report.rss_peak_kib = max(report.rss_peak_kib, rss_kib())
                await trio.sleep(publish_interval)
            finished.set()
            for topic in TOPICS:
                await server.publish(topic, Item(topic, -1))
        stop_server.set()

    report.stayers = len(results)
    for topic, after, got in results:
        expected = list(range(after + 1, seqs[topic] + 1))
        report.delivered += len(got)
        report.duplicates += len(got) - len(set(got))
        report.out_of_order += sum(1 for a, b in itertools.pairwise(got) if b < a)
        report.gaps += len(set(expected) - set(got))
    await trio.sleep(0.1)
    gc.collect()
    report.fds_after = open_fds()
    report.tasks_after = count_tasks()
    report.rss_after_kib = rss_kib()
    report.registry_after = len(server.registry)
    report.subscribers_after = sum(server.subscriber_count(t) for t in TOPICS)
    report.server_stats = attrs.asdict(server.stats)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--stayers", type=int, default=100)
    parser.add_argument("--churners", type=int, default=200)
    parser.add_argument("--slow-readers", type=int, default=20)
    args = parser.parse_args()
    report = trio.run(lambda: soak(args.seconds, args.stayers, args.churners, args.slow_readers))
    print(json.dumps(attrs.asdict(report), indent=2))
    problems = report.failures(rss_slack_kib=64 * 1024)
    print("OK" if not problems else "FAILED: " + "; ".join(problems))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
