"""History and recovery: what keeping history costs, and how fast a client recovers.

::

    python bench/history.py [--subscribers 100] [--messages 2000] [--size 200]
                            [--retained 1000] [--topics 20] [--missed 1000]
                            [--repeat 5] [--no-redis]

Measures, for :class:`MemoryBroker` and (when ``redis-server`` and coredis are installed)
for :class:`RedisBroker` on a ``redis-server`` it starts on a free 127.0.0.1 port:

* fan-out with history off and on: ``--messages`` publications of about ``--size`` bytes
  to one topic with ``--subscribers`` subscribers that count what they get (no network);
  deliveries per second, the best of ``--repeat`` alternating runs. For Redis, the
  subscribers are on a second broker (another worker), so every delivery crosses Redis
  either way.
* memory per retained publication: ``--topics`` topics keeping ``--retained`` publications
  each; Python heap growth (tracemalloc) for the memory broker, ``used_memory`` growth for
  Redis, per retained publication and beyond its payload.
* recovery: the time ``subscribe(topic, since=...)`` takes to deliver ``--missed`` missed
  publications (median of ``--repeat``); for Redis, on the worker that did not publish them.

Small defaults: it finishes in well under a minute. Nothing here is a pass/fail check.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import trio

from trio_wsroutes import Frame, MemoryBroker, RedisBroker, message
from trio_wsroutes._broker import Broker
from trio_wsroutes._history import History, HistoryPolicy, Position
from trio_wsroutes._messages import encode_message


@message("tick")
@attrs.frozen
class Tick:
    n: int
    text: str


class Counter:
    """A subscriber that counts frames (the cheapest possible connection); it lists its
    topics, as a connection does."""

    def __init__(self, *topics: str) -> None:
        self.topics = set(topics)
        self.count = 0
        self.last: Frame | None = None

    def deliver(self, frame: Frame) -> bool:
        self.count += 1
        self.last = frame
        return True


def tick(n: int, size: int) -> Frame:
    return encode_message(Tick(n, "x" * max(0, size - 40)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(60):
        while not predicate():  # noqa: ASYNC110 - polls counters other tasks update
            await trio.sleep(0.001)


# -- fan-out ---------------------------------------------------------------------------------


async def fan_out(
    publisher: Broker, receiver: Broker, args: argparse.Namespace, topic: str
) -> float:
    """Deliveries per second of ``--messages`` publications to ``--subscribers``."""
    counters = [Counter(topic) for _ in range(args.subscribers)]
    for counter in counters:
        await receiver.subscribe(topic, counter)
    frames = [tick(n, args.size) for n in range(args.messages)]
    expected = args.messages * args.subscribers
    started = time.perf_counter()
    for frame in frames:
        await publisher.publish(topic, frame)
    await wait_until(lambda: sum(c.count for c in counters) >= expected)
    elapsed = time.perf_counter() - started
    for counter in counters:
        await receiver.unsubscribe_all(counter)
    return float(expected / elapsed)


# -- memory per retained publication -----------------------------------------------------------


async def memory_per_retained(args: argparse.Namespace) -> tuple[float, int]:
    """Python heap bytes per retained publication in a MemoryBroker, and the payload size."""
    broker = MemoryBroker(history=HistoryPolicy({"m:*": History(args.retained)}))
    frames = [tick(n, args.size) for n in range(args.retained)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for index in range(args.topics):
        for frame in frames:
            await broker.publish(f"m:{index}", frame)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    payload = len((await broker.history("m:0", limit=1)).publications[0].payload)
    return (after - before) / (args.topics * args.retained), payload


def redis_used_memory(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nmemory\r\n")
        data = b""
        while b"used_memory:" not in data or not data.endswith(b"\r\n"):
            data += sock.recv(65536)
    for line in data.split(b"\r\n"):
        if line.startswith(b"used_memory:"):
            return int(line.split(b":")[1])
    raise RuntimeError("no used_memory in INFO memory")


async def redis_memory_per_retained(url: str, port: int, args: argparse.Namespace) -> float:
    policy = HistoryPolicy({"m:*": History(args.retained)})
    async with RedisBroker(url, history=policy, max_queued_messages=10**7) as broker:
        await broker.flush()
        before = redis_used_memory(port)
        for index in range(args.topics):
            for n in range(args.retained):
                await broker.publish(f"m:{index}", tick(n, args.size))
            await broker.flush()
        after = redis_used_memory(port)
    return float((after - before) / (args.topics * args.retained))


# -- recovery ----------------------------------------------------------------------------------


async def recovery_time(publisher: Broker, receiver: Broker, args: argparse.Namespace) -> float:
    """Median seconds for ``subscribe(since=...)`` to deliver ``--missed`` publications."""
    topic = "r:1"
    witness = Counter(topic)  # keeps the receiver's channel subscribed, as in a busy worker
    await receiver.subscribe(topic, witness)
    times: list[float] = []
    for _ in range(args.repeat):
        start = (await publisher.history(topic, limit=0)).position
        for n in range(args.missed):
            await publisher.publish(topic, tick(n, args.size))
        if isinstance(publisher, RedisBroker):
            await publisher.flush()
        await wait_until(lambda: witness.count >= args.missed * (len(times) + 1))
        client = Counter(topic)
        began = time.perf_counter()
        since = Position(start.epoch, start.offset)
        recovery = await receiver.subscribe(topic, client, since=since)
        times.append(time.perf_counter() - began)
        assert recovery.recovered, recovery
        assert recovery.missed == args.missed, recovery
        assert client.count == args.missed
        await receiver.unsubscribe_all(client)
    return statistics.median(times)


# -- main ------------------------------------------------------------------------------------


def rate(value: float) -> str:
    return f"{value:>12,.0f}/s"


Run = Callable[[], Awaitable[float]]


async def best_of(args: argparse.Namespace, off: Run, on: Run) -> tuple[float, float]:
    """The best rate of ``--repeat`` runs of each, alternating (the machine is shared)."""
    offs: list[float] = []
    ons: list[float] = []
    for _ in range(args.repeat):
        offs.append(await off())
        ons.append(await on())
    return max(offs), max(ons)


async def memory_section(args: argparse.Namespace) -> None:
    plain = MemoryBroker()
    history = MemoryBroker(history=HistoryPolicy({"f:*": History(args.retained)}))
    off, on = await best_of(
        args,
        lambda: fan_out(plain, plain, args, "f:1"),
        lambda: fan_out(history, history, args, "f:1"),
    )
    per_message, payload = await memory_per_retained(args)
    recovery_broker = MemoryBroker(history=HistoryPolicy({"r:*": History(args.missed)}))
    recovery = await recovery_time(recovery_broker, recovery_broker, args)
    print("MemoryBroker")
    print(f"  fan-out, history off   {rate(off)} deliveries")
    print(f"  fan-out, history on    {rate(on)} deliveries ({on / off:.0%} of off)")
    print(
        f"  memory per retained    {per_message:>12,.0f} B  (payload {payload} B, "
        f"overhead {per_message - payload:,.0f} B)"
    )
    print(f"  recover {args.missed} missed  {recovery * 1000:>12,.2f} ms")


async def redis_section(args: argparse.Namespace) -> None:
    executable = shutil.which("redis-server")
    if executable is None or importlib.util.find_spec("coredis") is None:
        print("RedisBroker: skipped (needs redis-server and coredis)")
        return
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    log = Path(tempfile.gettempdir()) / f"bench-history-redis-{port}.log"
    command = [executable, "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no"]
    redis = await trio.lowlevel.open_process(
        command, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    try:
        await trio.sleep(0.3)
        policy = HistoryPolicy({"h:*": History(args.retained), "r:*": History(args.missed)})

        def broker() -> RedisBroker:
            return RedisBroker(
                url, history=policy, max_queued_messages=10**7, max_queued_bytes=2**34
            )

        async with broker() as one, broker() as two:
            off, on = await best_of(
                args,
                lambda: fan_out(one, two, args, "p:1"),
                lambda: fan_out(one, two, args, "h:1"),
            )
            recovery = await recovery_time(one, two, args)
        per_message = await redis_memory_per_retained(url, port, args)
        print(f"RedisBroker (redis-server on 127.0.0.1:{port}, two brokers in one process)")
        print(f"  fan-out, history off   {rate(off)} deliveries")
        print(f"  fan-out, history on    {rate(on)} deliveries ({on / off:.0%} of off)")
        print(f"  Redis memory/retained  {per_message:>12,.0f} B")
        print(f"  recover {args.missed} missed  {recovery * 1000:>12,.2f} ms (other worker)")
    finally:
        redis.kill()
        await redis.wait()


async def main(args: argparse.Namespace) -> None:
    print(
        f"{args.subscribers} subscribers x {args.messages} messages of ~{args.size} B; "
        f"{args.topics} topics x {args.retained} retained; {args.missed} missed"
    )
    await memory_section(args)
    if args.redis:
        await redis_section(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--retained", type=int, default=1000)
    parser.add_argument("--topics", type=int, default=20)
    parser.add_argument("--missed", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-redis", dest="redis", action="store_false")
    trio.run(main, parser.parse_args())
