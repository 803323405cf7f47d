"""Presence: what it costs a fan-out, what an entry weighs in Redis, and how long reading
who is in a big topic takes.

::

    python bench/presence.py [--reps 3] [--seconds 2] [--subscribers 200]
                             [--entries 10000] [--repeat 5] [--only fanout|redis]

* **fan-out, presence off and on**: ``run.py``'s fan-out scenario (``--subscribers``
  picows subscribers on ``/sub``, one publisher pacing on their receipts) against
  ``servers.py native`` and ``native-presence`` (the same app with ``presence={"feed":
  Presence(info=...)}``: every subscriber listed with a small info object), alternating in
  one run, ``--reps`` runs each: deliveries per second, and per second of server CPU. A
  fresh server process per run, pinned to core 0, the clients on the other core(s).
* **Redis memory per present client**: a ``redis-server`` started here on a free
  127.0.0.1 port; ``used_memory`` (``INFO memory``) before and after ``--entries`` entries
  listed in one topic through ``RedisBroker.presence_join`` (as many connections would
  be: a user id and an info of about 30 bytes each), per entry.
* **reading a big topic**: ``presence_stats`` and ``presence`` (all ``--entries``
  entries) on that topic, through a running ``RedisBroker`` and a ``MemoryBroker``
  holding as many; medians of ``--repeat``.

Nothing here is a pass/fail check; the machine's other load moves these numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import harness
import run
import trio
from history import redis_used_memory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trio_wsroutes import MemoryBroker, Presence, PresencePolicy, RedisBroker
from trio_wsroutes._presence import PresenceMember

TOPIC = "room:big"
POLICY = PresencePolicy({"room:*": Presence(max_entries=100_000)})


# -- fan-out ------------------------------------------------------------------------------------


def fan_out(args: argparse.Namespace, pinning: harness.Pinning) -> dict[str, Any]:
    mode = run.Mode(reps=args.reps, warmup=0.5, seconds=args.seconds, idle_connections=0)
    scenario = run.Scenario("fanout-presence", "fanout", "deliveries/s", args.subscribers)
    runs: dict[str, list[run.Run]] = {"native": [], "native-presence": []}
    for rep in range(args.reps):
        order = ["native", "native-presence"] if rep % 2 == 0 else ["native-presence", "native"]
        for system in order:
            runs[system].append(run.measure(system, scenario, rep, mode, pinning, 1))
    out: dict[str, Any] = {}
    for system, done in runs.items():
        good = run.usable(done)
        good = [r for r in good if r.server_cpu]
        if not good:
            out[system] = {"error": [r.error for r in done]}
            continue
        rates = [r.value or 0.0 for r in good]
        per_cpu = [(r.value or 0.0) / (r.server_cpu or 1.0) for r in good]
        out[system] = {
            "deliveries_per_s": statistics.median(rates),
            "runs": [round(r, 1) for r in rates],
            "server_cpu": statistics.median(r.server_cpu or 0.0 for r in good),
            "deliveries_per_server_cpu_s": statistics.median(per_cpu),
            "disturbed": sum(r.disturbed for r in done),
            "client_limited": sum(r.client_limited for r in done),
        }
    return out


# -- Redis memory and reads ------------------------------------------------------------------


def member(n: int) -> PresenceMember:
    """A connection's entry as the server makes it: a user id and a small info."""
    return PresenceMember(f"{n:032x}", f"user-{n}", b'{"name":"guest-%06d","seat":%d}' % (n, n))


async def inject(broker: Any, entries: int) -> None:
    """List ``entries`` connections in :data:`TOPIC`, 64 joins in flight at a time."""
    limiter = trio.CapacityLimiter(64)

    async def join(n: int) -> None:
        async with limiter:
            await broker.presence_join(TOPIC, member(n))

    async with trio.open_nursery() as nursery:
        for n in range(entries):
            nursery.start_soon(join, n)


async def timed(repeat: int, call: Callable[[], Awaitable[object]]) -> float:
    """The median time of ``call()``, in seconds."""
    times: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def reads(broker: Any, args: argparse.Namespace) -> dict[str, float]:
    stats = await broker.presence_stats(TOPIC)
    assert stats.clients == args.entries, stats
    assert len(await broker.presence(TOPIC)) == args.entries
    return {
        "presence_stats_ms": await timed(args.repeat, lambda: broker.presence_stats(TOPIC)) * 1e3,
        "presence_ms": await timed(args.repeat, lambda: broker.presence(TOPIC)) * 1e3,
    }


async def redis_section(args: argparse.Namespace) -> dict[str, Any]:
    executable = shutil.which("redis-server")
    if executable is None or importlib.util.find_spec("coredis") is None:
        return {"error": "needs redis-server and coredis"}
    port = harness.free_port()
    url = f"redis://127.0.0.1:{port}/0"
    log = Path(tempfile.gettempdir()) / f"bench-presence-redis-{port}.log"
    command = [executable, "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no"]
    redis = await trio.lowlevel.open_process(
        command, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    try:
        await trio.sleep(0.3)
        broker = RedisBroker(url)
        broker.configure_presence(POLICY)
        async with broker:
            before = redis_used_memory(port)
            started = time.perf_counter()
            await inject(broker, args.entries)
            joins = time.perf_counter() - started
            after = redis_used_memory(port)
            out: dict[str, Any] = {
                "entries": args.entries,
                "bytes_per_entry": (after - before) / args.entries,
                "joins_per_s": args.entries / joins,
            }
            out.update(await reads(broker, args))
        return out
    finally:
        redis.kill()
        await redis.wait()


async def memory_section(args: argparse.Namespace) -> dict[str, Any]:
    broker = MemoryBroker()
    broker.configure_presence(POLICY)
    await inject(broker, args.entries)
    out: dict[str, Any] = {"bytes_per_entry": broker.presence_bytes / args.entries}
    out.update(await reads(broker, args))
    return out


# -- the table --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "presence.json")
    parser.add_argument("--only", choices=("fanout", "redis"), help="one part only")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": harness.machine()}
    rows: list[tuple[str, str]] = []
    if args.only in (None, "fanout"):
        pinning = harness.Pinning.detect()
        harness.raise_fd_limit()
        if pinning.enabled:
            os.sched_setaffinity(0, set(pinning.clients))  # this process mostly waits
        print(f"{pinning.describe()}; load average {os.getloadavg()[0]:.2f}")
        results["fanout"] = fanout = fan_out(args, pinning)
        for system, line in fanout.items():
            state = "on" if "presence" in system else "off"
            label = f"fan-out {args.subscribers}, presence {state}"
            if "error" in line:
                rows.append((label, f"error: {line['error']}"))
                continue
            rows.append(
                (
                    label,
                    f"{line['deliveries_per_s']:>10,.0f} deliveries/s, "
                    f"{line['deliveries_per_server_cpu_s']:>10,.0f} per server CPU-s "
                    f"(runs {line['runs']}, {line['disturbed']} disturbed)",
                )
            )
    if args.only in (None, "redis"):
        results["redis"] = redis = trio.run(redis_section, args)
        results["memory"] = memory = trio.run(memory_section, args)
        n = f"{args.entries:,}"
        if "error" in redis:
            rows.append(("Redis", redis["error"]))
        else:
            rows += [
                ("Redis memory per present client", f"{redis['bytes_per_entry']:>10,.0f} B"),
                (f"Redis: {n} joins", f"{redis['joins_per_s']:>10,.0f} joins/s (64 in flight)"),
                (f"Redis: presence_stats, {n}", f"{redis['presence_stats_ms']:>10.3f} ms"),
                (f"Redis: presence, {n}", f"{redis['presence_ms']:>10.1f} ms"),
            ]
        rows += [
            ("memory broker: bytes per entry", f"{memory['bytes_per_entry']:>10,.0f} B (budget)"),
            (f"memory: presence_stats, {n}", f"{memory['presence_stats_ms']:>10.3f} ms"),
            (f"memory: presence, {n}", f"{memory['presence_ms']:>10.1f} ms"),
        ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    harness.write_json(args.out, results)
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
