"""Broker throughput through ``RedisBroker``, one Redis against a three-master Redis Cluster.

::

    python bench/redis_cluster.py [--count 20000] [--runs 3] [--topics 12]

Starts a ``redis-server`` and a three-master cluster (``redis-cli --cluster create``, no
replicas; ``tests/_redis_cluster.py``'s), each on free 127.0.0.1 ports, no persistence.
Each run has two processes, each with its own ``RedisBroker``: a subscriber on
``--topics`` topics (on a cluster they land on all three masters) and a publisher that
publishes ``--count`` small publications round-robin over them. It times from the
publisher's start until the subscriber has the last one (or stops getting any), and
reports publications per second *received*, and how many were lost. Two kinds of
topic: plain (``PUBLISH``/``SPUBLISH``) and with history (``History(size=1000)``: the
publish script, numbered). The cases are interleaved, one Redis then the cluster, in
every run; prints the median of ``--runs``.

Nothing here is a pass/fail check; the machine's other load moves these numbers.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import harness

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests._redis import RedisServer  # noqa: E402
from tests._redis_cluster import RedisCluster  # noqa: E402

CHILD = """
import json, sys, time, trio
from trio_wsroutes import Frame, History, RedisBroker
role, url, topics, count, prefix = sys.argv[1:6]
topics = [f"{prefix}:{n}" for n in range(int(topics))]
count = int(count)
policy = {"hist:*": History(size=1000)}
frame = Frame(b'{"type":"said","data":{"n":0,"text":"' + b"x" * 100 + b'"}}')

class Counter:
    def __init__(self):
        self.topics = set(topics)
        self.n = 0
        self.last = 0.0
    def deliver(self, frame):
        self.n += 1
        self.last = time.time()
        return True

async def main():
    broker = RedisBroker(url, history=policy, max_queued_messages=count + 1,
                         max_queued_bytes=2**40)
    async with broker:
        counter = Counter()
        if role == "sub":
            for topic in topics:
                await broker.subscribe(topic, counter)
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        start = time.time()
        if role == "pub":
            for n in range(count):
                await broker.publish(topics[n % len(topics)], frame)
                if n % 500 == 499:
                    await broker.flush()
            await broker.flush()
        else:
            seen = -1
            while counter.n < count and counter.n != seen:
                seen = counter.n
                await trio.sleep(2.0)  # stops when nothing more came for 2 s
    stats = broker.stats
    print(json.dumps({"start": start, "last": counter.last, "received": counter.n,
                      "lost": stats.publish_lost, "missed": stats.missed,
                      "dropped": stats.receive_dropped}), flush=True)
trio.run(main)
"""


def child(role: str, url: str, topics: int, count: int, kind: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", CHILD, role, url, str(topics), str(count), kind]
    return harness.start_ready_child(command, f"the {role} process")


def run_case(url: str, topics: int, count: int, kind: str) -> dict[str, float]:
    sub = child("sub", url, topics, count, kind)
    pub = child("pub", url, topics, count, kind)
    sub_result, pub_result = harness.go_and_collect(
        [("the sub process", sub), ("the pub process", pub)], 600
    )
    results = {"pub": pub_result, "sub": sub_result}
    received = results["sub"]["received"]
    elapsed = results["sub"]["last"] - results["pub"]["start"]
    return {
        "rate": received / elapsed if received and elapsed > 0 else 0.0,
        "received": received,
        "lost": results["pub"]["lost"] + results["sub"]["missed"] + results["sub"]["dropped"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--topics", type=int, default=12)
    args = parser.parse_args()
    executable, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if executable is None or cli is None:
        raise SystemExit("needs redis-server and redis-cli")
    with tempfile.TemporaryDirectory() as tmp:
        single = RedisServer(executable, Path(tmp))
        cluster = RedisCluster(executable, cli, Path(tmp))
        try:
            single.start()
            cluster.start()
            targets = {"one Redis": single.url, "3-master cluster": cluster.url}
            results: dict[tuple[str, str], list[dict[str, float]]] = {}
            for run in range(args.runs):
                for kind in ("plain", "hist"):
                    for name, url in targets.items():
                        result = run_case(url, args.topics, args.count, f"{kind}:r{run}")
                        results.setdefault((name, kind), []).append(result)
                        print(name, kind, {k: round(v) for k, v in result.items()}, flush=True)
        finally:
            single.kill()
            cluster.stop()
    print(
        f"\nmedian publications/s received, {args.count} per run over {args.topics} topics, "
        f"{args.runs} runs"
    )
    for (name, kind), rows in sorted(results.items(), key=lambda item: item[0][1]):
        rate = statistics.median(r["rate"] for r in rows)
        lost = sum(r["lost"] for r in rows)
        label = "history" if kind == "hist" else "plain"
        print(f"{name:17} {label:8} {rate:8.0f}/s  (lost {lost:.0f})")


if __name__ == "__main__":
    main()
