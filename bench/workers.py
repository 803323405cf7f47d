"""Fan-out on the native transport from one process and from worker processes:

    python bench/workers.py [--subscribers 200] [--inflight 8 | --rate R] [--seconds 5]
                            [--runs 3] [--output workers.json]

Three configurations serve ``servers.py``'s routes (``bench/workers_app.py``):

* ``native-1``: ``trio-wsroutes serve --native``, one process, ``MemoryBroker``;
* ``native-1-redis``: the same single process with a ``RedisBroker`` (what Redis costs
  without a second process);
* ``native-2-redis``: ``--workers 2`` with a ``RedisBroker``: the subscribers spread over
  both workers (the kernel picks), the publisher's worker delivers locally and through
  Redis to the other.

The load generator (``loadgen.py fanout``, one publisher with ``--inflight`` messages in
flight, or ``--rate`` publications a second whatever comes back) reports deliveries per
second and the server's CPU: the sum over the worker processes (the supervisor idles);
``redis-server``'s CPU is reported apart. Nothing is pinned: on a machine with few cores
the load generator, Redis and the workers share them, so two workers cannot double
anything there; the deliveries per server CPU-second say what each configuration costs.
With ``--inflight`` they also depend on how many publications each wake-up of a process
finds (a longer path spreads the window thinner); ``--rate`` compares at the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness

ROOT = Path(__file__).resolve().parent.parent
APP = "bench.workers_app:server"


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(") ")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _serve(workers: int, redis_url: str | None, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    command = [sys.executable, "-m", "trio_wsroutes._cli", "serve", APP, "--native"]
    command += ["--port", "0"]
    if workers > 1:
        command += ["--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if redis_url:
        env["WSROUTES_REDIS_URL"] = redis_url
    out = log.open("wb")
    process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=out, env=env)
    out.close()
    end = time.monotonic() + 30
    while not (match := re.search(r"ws://127\.0\.0\.1:(\d+)", log.read_text())):
        if process.poll() is not None or time.monotonic() > end:
            harness.stop_process(process)
            raise RuntimeError(f"the server did not start: {log.read_text()}")
        time.sleep(0.05)
    return process, int(match.group(1))


def one_run(
    name: str, workers: int, redis: tuple[str, int] | None, args: argparse.Namespace
) -> dict[str, Any]:
    log = harness.RESULTS / "logs" / f"workers-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    process, port = _serve(workers, redis[0] if redis else None, log)
    try:
        pids = _children(process.pid) if workers > 1 else [process.pid]
        command = harness.python_command(
            "loadgen.py", "fanout", "--port", str(port), "--subscribers", str(args.subscribers)
        )
        command += ["--inflight", str(args.inflight), "--rate", str(args.rate)]
        command += ["--seconds", str(args.seconds), "--warmup", "1"]
        for pid in pids:
            command += ["--server-pid", str(pid)]
        redis_cpu0 = harness.process_cpu_seconds(redis[1]) if redis else 0.0
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
        elapsed = time.perf_counter() - started
        redis_cpu = (harness.process_cpu_seconds(redis[1]) - redis_cpu0) if redis else 0.0
        data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        harness.stop_process(process)
    server_cpu = data["server_cpu"] or 0.0
    return {
        "config": name,
        "workers": len(pids),
        "deliveries_per_s": data["rate"],
        "server_cpu_cores": server_cpu,
        "deliveries_per_server_cpu_s": data["rate"] / server_cpu if server_cpu else None,
        "client_cpu_cores": data["client_cpu"],
        "redis_cpu_cores_whole_run": redis_cpu / elapsed,
        "published": data["published"],
        "behind": data["behind"],
        "stalled": data["stalled"],
        "errors": data["errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="publications a second, the same for every configuration (an open loop)",
    )
    parser.add_argument("--output", default="workers.json", help="file in bench/results/")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not installed")
    redis_port = harness.free_port()
    redis = subprocess.Popen(
        [executable, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        harness.wait_for_port(redis_port, process=redis)
        url = (f"redis://127.0.0.1:{redis_port}/0", redis.pid)
        configs = [("native-1", 1, None), ("native-1-redis", 1, url), ("native-2-redis", 2, url)]
        results: list[dict[str, Any]] = []
        for run in range(args.runs):
            for name, workers, redis_url in configs:
                result = one_run(name, workers, redis_url, args)
                result["run"] = run
                results.append(result)
                print(json.dumps(result), flush=True)
    finally:
        redis.send_signal(signal.SIGTERM)
        redis.wait(timeout=10)
    print(
        f"{'config':<16}{'deliveries/s':>14}{'server CPU':>12}{'per CPU-s':>12}{'redis CPU':>11}"
    )
    for name, _, _ in configs:
        rows = [r for r in results if r["config"] == name]
        rate = harness.median([r["deliveries_per_s"] for r in rows])
        cpu = harness.median([r["server_cpu_cores"] for r in rows])
        per = harness.median([r["deliveries_per_server_cpu_s"] or 0.0 for r in rows])
        rcpu = harness.median([r["redis_cpu_cores_whole_run"] for r in rows])
        print(f"{name:<16}{rate:>14,.0f}{cpu:>12.2f}{per:>12,.0f}{rcpu:>11.2f}")
    harness.write_json(
        harness.RESULTS / args.output,
        {"machine": harness.machine(), "arguments": vars(args), "runs": results},
    )


if __name__ == "__main__":
    main()
