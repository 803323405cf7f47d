"""Publish throughput on one topic with history through ``RedisBroker``.

::

    python bench/redis_history.py [--count 20000] [--runs 5] [--before PATH]

Starts its own ``redis-server`` on a free 127.0.0.1 port. Each run publishes ``--count``
small publications per publisher, on a fresh topic with ``History(size=1000)``, from one
publisher process or two at once on the same topic, without and with a ``secret``; it
times from the common start until every publisher's publications are acknowledged by
Redis. With a secret, publishers propose the position they sign and propose again when
another took it (``publish_conflicts``). ``--before PATH`` also runs a checkout of other
code (``git worktree add /tmp/before <commit>``), the runs interleaved. Prints the median
publications per second of each case, and the mean time Redis spent in one publish
script (``INFO commandstats``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
from harness import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "a benchmark secret of 32 bytes!!"

PUBLISHER = """
import json, sys, time, trio
from trio_wsroutes import Frame, History, RedisBroker
url, topic, count, secret = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
async def main():
    options = {"secret": secret} if secret else {}
    history = {"room:*": History(size=1000)}
    broker = RedisBroker(url, history=history, max_queued_messages=count + 1,
                         max_queued_bytes=2**40, **options)
    frame = Frame(b'{"type":"said","data":{"n":0,"text":"' + b"x" * 100 + b'"}}')
    async with broker:
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)  # every publisher is connected
        start = time.time()
        for n in range(count):
            await broker.publish(topic, frame)
            if n % 500 == 499:
                await broker.flush()
        await broker.flush()
        end = time.time()
    stats = broker.stats
    print(json.dumps({"start": start, "end": end, "published": stats.published,
                      "lost": stats.publish_lost,
                      "conflicts": getattr(stats, "publish_conflicts", 0)}), flush=True)
trio.run(main)
"""


def redis_command(port: int, *args: str) -> bytes:
    """One command in plain RESP; the raw reply."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg.encode()), arg.encode()))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"".join(parts))
        time.sleep(0.05)
        return sock.recv(65536)


def script_usec(port: int) -> float:
    """Redis' mean microseconds per EVALSHA since the last CONFIG RESETSTAT."""
    info = redis_command(port, "INFO", "commandstats").decode()
    match = re.search(r"cmdstat_evalsha:calls=\d+,usec=\d+,usec_per_call=([0-9.]+)", info)
    return float(match.group(1)) if match else 0.0


def run_case(code: Path, url: str, topic: str, count: int, secret: str, publishers: int) -> dict:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    redis_command(port, "CONFIG", "RESETSTAT")
    command = [sys.executable, "-c", PUBLISHER, url, topic, str(count), secret]
    name = f"a publisher ({code})"
    children = [
        (name, harness.start_ready_child(command, name, code=code)) for _ in range(publishers)
    ]
    results = harness.go_and_collect(children, 300)
    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "rate": sum(r["published"] for r in results) / elapsed,
        "lost": sum(r["lost"] for r in results),
        "conflicts": sum(r["conflicts"] for r in results),
        "script_usec": script_usec(port),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", type=Path, default=None)
    args = parser.parse_args()
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not installed")
    codes = {"after": ROOT}
    if args.before is not None:
        codes = {"before": args.before.resolve(), **codes}
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        redis = subprocess.Popen(
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
            cwd=tmp,
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            url = f"redis://127.0.0.1:{port}/0"
            rates: dict[tuple[str, str, int], list[dict]] = {}
            number = 0
            for _ in range(args.runs):
                for secret in ("", SECRET):
                    for publishers in (1, 2):
                        for name, code in codes.items():
                            number += 1
                            result = run_case(
                                code, url, f"room:{number}", args.count, secret, publishers
                            )
                            key = (name, "secret" if secret else "no secret", publishers)
                            rates.setdefault(key, []).append(result)
                            print(key, {k: round(v, 1) for k, v in result.items()}, flush=True)
        finally:
            redis.kill()
            redis.wait()
    print(f"\nmedian publications/s, {args.count} per publisher, {args.runs} runs")
    for (name, secret, publishers), results in sorted(rates.items(), key=lambda i: i[0][1:]):
        rate = statistics.median(r["rate"] for r in results)
        conflicts = statistics.median(r["conflicts"] for r in results)
        usec = statistics.median(r["script_usec"] for r in results)
        lost = sum(r["lost"] for r in results)
        print(
            f"{name:6} {secret:9} {publishers} publisher(s): {rate:8.0f}/s"
            f"  (script {usec:.1f} µs in Redis, conflicts {conflicts:.0f}, lost {lost})"
        )


if __name__ == "__main__":
    main()
