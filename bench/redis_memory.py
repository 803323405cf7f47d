"""Memory of a RedisBroker whose process cannot keep up with what Redis sends it.

::

    python bench/redis_memory.py [--messages 50000] [--size 1024] [--delay 0.0005]
                                 [--limit-bytes 16777216] [--busy 0]

Starts its own ``redis-server`` on a free 127.0.0.1 port, subscribes one deliberately slow
local subscriber (``--delay`` seconds of blocking work per message: the Trio loop is busy)
and has another process publish ``--messages`` messages of ``--size`` bytes as fast as
Redis takes them. ``--busy N`` adds N tasks that each burn 0.2 ms per scheduler turn.
Prints the peak RSS growth of this process, the peak of the broker's inbound queue, and
how many messages were delivered, dropped (queue full) or missed (Redis closed the
subscriber). Run it with a huge ``--limit-bytes`` to see what an unbounded queue costs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
from harness import free_port, rss_bytes

from trio_wsroutes import Frame, RedisBroker

PUBLISHER = """
import sys, trio
from trio_wsroutes import Frame, RedisBroker
url, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def main():
    async with RedisBroker(url, max_queued_messages=count + 1, max_queued_bytes=2**40) as b:
        frame = Frame(b"x" * size)
        for n in range(count):
            await b.publish("flood", frame)
            if n % 1000 == 999:
                await b.flush()
    print(f"published {b.stats.published}, lost {b.stats.publish_lost}", flush=True)
trio.run(main)
"""


class Slow:
    def __init__(self, delay: float) -> None:
        self.topics = {"flood"}  # a subscriber lists its topics, as a connection does
        self.delay = delay
        self.count = 0

    def deliver(self, frame: Frame) -> bool:
        deadline = time.perf_counter() + self.delay
        while time.perf_counter() < deadline:
            pass
        self.count += 1
        return True


async def main(args: argparse.Namespace) -> None:
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    log = Path(tempfile.gettempdir()) / f"bench-redis-{port}.log"
    redis = await trio.lowlevel.open_process(
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        await trio.sleep(0.3)
        broker = RedisBroker(url, max_queued_bytes=args.limit_bytes, max_queued_messages=10**9)
        slow = Slow(args.delay)
        async with trio.open_nursery() as nursery, broker:

            async def burn() -> None:
                while True:
                    deadline = time.perf_counter() + 0.0002
                    while time.perf_counter() < deadline:
                        pass
                    await trio.lowlevel.checkpoint()

            for _ in range(args.busy):
                nursery.start_soon(burn)
            await broker.subscribe("flood", slow)
            baseline = peak = rss_bytes()  # coredis imported, connections up
            started = time.perf_counter()
            publisher = await trio.lowlevel.open_process(
                [sys.executable, "-c", PUBLISHER, url, str(args.messages), str(args.size)]
            )
            with trio.move_on_after(args.max_seconds):
                while True:
                    peak = max(peak, rss_bytes())
                    stats = broker.stats
                    done = publisher.returncode is not None and broker.inbound_queue_bytes == 0
                    accounted = slow.count + stats.receive_dropped + stats.missed
                    if done and (accounted >= args.messages or stats.disconnects):
                        break
                    await trio.sleep(0.01)
            await publisher.wait()
            elapsed = time.perf_counter() - started
            nursery.cancel_scope.cancel()
        stats = broker.stats
        mib = 1024 * 1024
        print(f"messages {args.messages} x {args.size} B, subscriber delay {args.delay} s")
        print(f"queue limit {args.limit_bytes / mib:.1f} MiB, busy tasks {args.busy}")
        print(f"peak RSS growth {(peak - baseline) / mib:.1f} MiB (baseline {baseline / mib:.1f})")
        print(f"peak inbound queue {stats.inbound_queue_peak_bytes / mib:.2f} MiB")
        print(
            f"delivered {slow.count}, dropped (queue full) {stats.receive_dropped}, "
            f"missed {stats.missed}, disconnects {stats.disconnects}, {elapsed:.1f} s"
        )
    finally:
        redis.kill()
        await redis.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--delay", type=float, default=0.0005)
    parser.add_argument("--limit-bytes", type=int, default=16 * 1024 * 1024)
    parser.add_argument("--busy", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    trio.run(main, parser.parse_args())
