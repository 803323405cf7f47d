"""What a publication through ``RedisBroker`` costs the server processes, per publication:

::

    python bench/redis_path.py [--count 2000] [--subscribers 1] [--burst 1] [--callgrind]

Starts a ``redis-server`` on a free 127.0.0.1 port (no persistence; stopped by PID) and
measures two cases, each in its own process with its own ``RedisBroker``:

* ``publisher``: one process publishes ``--count`` frames on one topic with
  ``--subscribers`` local subscribers (delivered locally; its own echo from Redis comes
  back and is dropped), ``--burst`` publications per scheduler turn (1: one per turn,
  as a server publishing for a client does);
* ``receiver``: a second process with ``--subscribers`` local subscribers receives them
  from a publisher process (not measured, ``--receiver-pace`` seconds between
  publications, so that each arrives on its own, as in a server) and fans them out.

Without ``--callgrind`` it reports the measured process's CPU time per publication
(``getrusage``, noisy on a shared machine). With ``--callgrind`` it runs the measured
process under ``valgrind --tool=callgrind`` for ``count`` and ``3 * count`` publications
and reports the difference of the instruction counts over ``2 * count``: per
publication, without the start-up, deterministic up to how the messages are batched.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import harness

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests._redis import RedisServer  # noqa: E402

CHILD = """
import json, resource, sys, trio
from trio_wsroutes import Frame, RedisBroker
role, url, count, subscribers, burst, pace = sys.argv[1:7]
count, subscribers, burst, pace = int(count), int(subscribers), int(burst), float(pace)
frame = Frame(b'{"type":"said","data":{"n":0,"text":"' + b"x" * 100 + b'"}}')

class Counter:
    topics = ("t",)
    def __init__(self):
        self.n = 0
        self.done = trio.Event()
    def deliver(self, frame):
        self.n += 1
        if self.n == count:
            self.done.set()
        return True

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

async def main():
    broker = RedisBroker(url, max_queued_messages=count + 1, max_queued_bytes=2**40)
    counters = [Counter() for _ in range(subscribers)]
    async with broker:
        for counter in counters:
            await broker.subscribe("t", counter)
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        start = cpu()
        if role == "pub":
            for n in range(count):
                await broker.publish("t", frame)
                if n % burst == burst - 1:
                    await trio.sleep(pace)
            await broker.flush()
            await trio.sleep(0.5)  # the last echoes come back (and are dropped)
        else:
            with trio.move_on_after(60 + count / 10):
                await counters[0].done.wait()
        used = cpu() - start
    print(json.dumps({"cpu": used, "delivered": sum(c.n for c in counters),
                      "received": broker.stats.received}), flush=True)

trio.run(main)
"""


SCRIPT = Path(tempfile.gettempdir()) / f"redis_path_child_{os.getpid()}.py"


def _child(
    role: str, url: str, args: argparse.Namespace, count: int, callgrind: Path | None
) -> subprocess.Popen[bytes]:
    command = [sys.executable, str(SCRIPT), role, url, str(count)]
    command += [str(args.subscribers), str(args.burst), str(args.pace)]
    if getattr(args, "profile", None):
        command[1:1] = ["-m", "cProfile", "-o", f"{args.profile}.{role}"]
    if callgrind is not None:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind}", *command]
    return harness.start_ready_child(command, f"the {role} process", quiet=True)


def run_case(
    case: str, url: str, args: argparse.Namespace, count: int, callgrind: Path | None
) -> dict[str, float]:
    """Run ``case`` once; the measured process's result."""
    if case == "publisher":
        publisher = _child("pub", url, args, count, callgrind)
        return harness.go_and_collect([("the pub process", publisher)], 1800)[0]
    receiver = _child("sub", url, args, count, callgrind)
    paced = argparse.Namespace(subscribers=0, burst=1, pace=args.receiver_pace)
    publisher = _child("pub", url, paced, count, None)
    children = [("the sub process", receiver), ("the pub process", publisher)]
    return harness.go_and_collect(children, 1800)[0]


def _instructions(path: Path) -> int:
    match = re.search(r"^(?:summary|totals): (\d+)", path.read_text(), re.M)
    if match is None:
        raise SystemExit(f"no totals in {path}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--subscribers", type=int, default=1)
    parser.add_argument("--burst", type=int, default=1)
    parser.add_argument("--case", choices=["publisher", "receiver", "both"], default="both")
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between bursts")
    parser.add_argument(
        "--receiver-pace",
        type=float,
        default=0.002,
        help="seconds between the publications the receiver gets (0: as fast as it can)",
    )
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--keep", metavar="DIR", help="keep the callgrind files in DIR")
    parser.add_argument("--profile", metavar="PREFIX", help="cProfile output: PREFIX.pub/.sub")
    args = parser.parse_args()
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not installed")
    if args.callgrind and shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    cases = ["publisher", "receiver"] if args.case == "both" else [args.case]
    with tempfile.TemporaryDirectory() as tmp:
        SCRIPT.write_text(CHILD)
        redis = RedisServer(executable, Path(tmp))
        try:
            redis.start()
            for case in cases:
                if args.callgrind:
                    counts = []
                    for count in (args.count, 3 * args.count):
                        out = Path(args.keep or tmp) / f"callgrind.{case}.{count}"
                        result = run_case(case, redis.url, args, count, out)
                        counts.append(_instructions(out))
                    per = (counts[1] - counts[0]) / (2 * args.count)
                    print(f"{case:10} {per:12,.0f} instructions per publication", flush=True)
                else:
                    result = run_case(case, redis.url, args, args.count, None)
                    per_us = result["cpu"] / args.count * 1e6
                    print(f"{case:10} {per_us:8.1f} µs CPU per publication  {result}", flush=True)
        finally:
            redis.kill()
            SCRIPT.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
