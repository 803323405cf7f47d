"""The benchmark suite: this project (ASGI under hypercorn-trio, and native) against the plain
hypercorn-trio app (the floor of the ASGI mode), FastAPI + pydantic on uvicorn (what a
Python user would write instead), the ``websockets`` asyncio server on uvloop echoing and
broadcasting raw frames (the protocol library under the native transport, with nothing on
top), the same library's Trio server (the native transport's event loop), Bun (the ceiling)
and the fan-out floor (``floor.py``: a bare Python loop handing one pre-framed message to
every subscriber's socket), on one machine in one run.

    python bench/run.py --mode short     # a quick check, about 3 minutes
    python bench/run.py --mode full      # the documentation's figures, about 45 minutes
    python bench/run.py --mode full --systems native,fastapi --scenarios echo,fanout-200

Each run starts a fresh server process (``servers.py``, ``floor.py`` or
``bun/server.ts``) pinned to core 0 and picows load generators (``loadgen.py``) pinned to
the other core(s); the repetitions go round the systems in a different order each time;
results (every repetition, medians, p50/p99 latencies, CPU of client and server,
deliveries per server CPU-second, server CPU microseconds per message split into user
and system time, how busy the cores were and how much of them the hypervisor stole, the
native transport's ratio to each peer in every repetition, the targets) go to
``bench/results/MODE.json`` after every run. ``--syscalls`` adds one repetition under
``strace -c -f`` for the server's system calls per message, by kind. ``report.py``
turns a results file into the docs' table and chart. The p99 target compares the
native transport with a baseline results file (``--baseline``, by default the committed
``bench/results/full.json``, read before anything is written). The full run takes about 45 minutes.
127.0.0.1 only; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import figures
import harness

SYSTEMS = (
    "asgi",
    "native",
    "hypercorn",
    "fastapi",
    "websockets",
    "websockets-trio",
    "bun",
    "floor",
    "floor-batched",
)
EXTRA_SYSTEMS = ("native-history", "native-presence", "native-metrics", "native-tracing")
"""Accepted by ``--systems``, not run by default (``bench/history_live.py`` uses
``native-history``, ``bench/presence.py`` uses ``native-presence``; ``--systems
native,native-metrics,native-tracing`` measures what observability costs)."""
LABELS = {
    "asgi": "trio_wsroutes, ASGI on hypercorn-trio",
    "native": "trio_wsroutes, native transport",
    "native-history": "trio_wsroutes, native transport, history on the topic (1 000 kept)",
    "native-metrics": "trio_wsroutes, native transport, metrics and access log on, scraped 1/s",
    "native-tracing": "trio_wsroutes, native transport, tracing on (spans made, not exported)",
    "hypercorn": "plain ASGI app on hypercorn-trio (floor)",
    "fastapi": "FastAPI + pydantic on uvicorn",
    "websockets": "websockets asyncio server on uvloop, raw echo / broadcast() (no validation)",
    "websockets-trio": "websockets Trio server, raw echo / broadcast() (no validation)",
    "bun": "Bun.serve + Zod (ceiling)",
    "floor": "fan-out floor: one pre-framed message, sock.send to each subscriber (floor.py)",
    "floor-batched": "fan-out floor, batched: the messages of one recv in one sock.send each",
}
ONLY = {"floor": ("fanout-200", "fanout-1000"), "floor-batched": ("fanout-200", "fanout-1000")}
"""Systems that serve only some scenarios (the floor: fan-out without compression)."""
CLIENT_LIMIT = 0.9  # a load-generator core this busy means the client may be the limit
SERVER_LIMIT = 0.9
DISTURBED = 0.25  # other processes used this much of the measured cores: left out
STOLEN = 0.05  # the hypervisor took this much of a measured core's time: left out too


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # loadgen scenario: echo, fanout, connect, idle
    unit: str
    subscribers: int = 0
    deflate: bool = False

    @property
    def higher_is_better(self) -> bool:
        return self.kind != "idle"


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("echo", "echo", "msgs/s"),
        Scenario("fanout-200", "fanout", "deliveries/s", subscribers=200),
        Scenario("fanout-1000", "fanout", "deliveries/s", subscribers=1000),
        Scenario("fanout-200-deflate", "fanout", "deliveries/s", subscribers=200, deflate=True),
        Scenario("fanout-1000-deflate", "fanout", "deliveries/s", subscribers=1000, deflate=True),
        Scenario("connect", "connect", "handshakes/s"),
        Scenario("idle", "idle", "KiB/connection"),
        Scenario("idle-deflate", "idle", "KiB/connection", deflate=True),
    )
}


def serves(system: str, scenario: str) -> bool:
    return scenario in ONLY.get(system, (scenario,))


@dataclass
class Mode:
    reps: int
    warmup: float
    seconds: float
    idle_connections: int
    echo_connections: int = 50
    inflight: int = 8
    connect_concurrency: int = 16
    scenarios: tuple[str, ...] = tuple(SCENARIOS)


MODES = {
    "short": Mode(
        reps=1,
        warmup=0.5,
        seconds=1.5,
        idle_connections=1000,
        scenarios=("echo", "fanout-200", "fanout-200-deflate", "connect", "idle", "idle-deflate"),
    ),
    "full": Mode(reps=5, warmup=2.0, seconds=5.0, idle_connections=3000),
}


@dataclass
class Run:
    system: str
    scenario: str
    rep: int
    value: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    client_cpu: float | None = None
    server_cpu: float | None = None
    per_cpu: float | None = None  # throughput per server CPU-second
    client_limited: bool = False
    server_saturated: bool = False
    other_load: float | None = None
    # Server CPU microseconds per message (echo), delivery (fan-out) or handshake.
    server_user_us: float | None = None
    server_system_us: float | None = None
    steal: float | None = None  # the largest share of a measured core's time stolen
    disturbed: bool = False
    traced: bool = False  # under strace (--syscalls): counts calls, its timings do not count
    syscalls: dict[str, float] | None = None  # calls per message, by kind
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


# -- one run -----------------------------------------------------------------------------


def server_command(system: str, port: int) -> list[str]:
    if system == "bun":
        return [str(harness.BUN), str(harness.BENCH / "bun" / "server.ts"), str(port)]
    if system == "floor":
        return harness.python_command("floor.py", str(port))
    if system == "floor-batched":
        return harness.python_command("floor.py", str(port), "--batch")
    return harness.python_command("servers.py", system, str(port))


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def loadgen(
    pinning: harness.Pinning, index: int, args: Sequence[str], *, stdin: bool = False
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*pinning.client_prefix(index), *harness.python_command("loadgen.py", *args)],
        cwd=harness.ROOT,
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        harness.stop_process(process)
        raise RuntimeError("the load generator did not finish in time") from None
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed ({process.returncode})")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def throughput(
    run: Run,
    scenario: Scenario,
    mode: Mode,
    pinning: harness.Pinning,
    clients: int,
    port: int,
    pid: int,
    trace: Path | None = None,
) -> None:
    common = ["--port", str(port), "--server-pid", str(pid)]
    common += ["--warmup", str(mode.warmup), "--seconds", str(mode.seconds)]
    if scenario.kind == "fanout":
        clients = 1  # one publisher paces on every subscriber's receipts: one process
    start_at = time.time() + 1.5 + mode.echo_connections / 1000
    processes = []
    for index in range(clients):
        args = [scenario.kind, *common, "--start-at", str(start_at if clients > 1 else 0)]
        if scenario.kind == "echo":
            args += ["--connections", str(split(mode.echo_connections, clients)[index])]
        elif scenario.kind == "connect":
            args += ["--concurrency", str(split(mode.connect_concurrency, clients)[index])]
        else:
            args += ["--subscribers", str(scenario.subscribers), "--inflight", str(mode.inflight)]
            if scenario.deflate:
                args.append("--deflate")
        if trace is not None and index == 0:
            args += ["--strace", str(trace)]
        processes.append(loadgen(pinning, index, args))
    results = [finish(p, timeout=mode.warmup + mode.seconds + 90) for p in processes]
    run.value = sum(r["rate"] for r in results)
    latencies = sorted(v for r in results for v in r["latency_us"])
    run.p50_ms = harness.percentile(latencies, 0.50) / 1000
    run.p99_ms = harness.percentile(latencies, 0.99) / 1000
    # CPU per load-generator core: several processes on one core share it.
    per_core: dict[int, float] = {}
    for index, result in enumerate(results):
        core = pinning.clients[index % len(pinning.clients)] if pinning.clients else -1
        per_core[core] = per_core.get(core, 0.0) + result["client_cpu"]
    run.client_cpu = max(per_core.values())
    run.server_cpu = results[0]["server_cpu"]
    # Deliveries (messages, handshakes) per second of the server's CPU time: what its
    # work costs, whichever side was the limit.
    run.per_cpu = run.value / run.server_cpu if run.server_cpu else None
    if run.value and results[0].get("server_user") is not None:
        run.server_user_us = 1e6 * results[0]["server_user"] / run.value
        run.server_system_us = 1e6 * results[0]["server_system"] / run.value
    if "syscalls" in results[0] and run.value:
        # The traced window is process 0's; every process measured the same window.
        messages = run.value * results[0]["elapsed"]
        run.syscalls = figures.per_message(results[0]["syscalls"], messages)
    run.client_limited = run.client_cpu >= CLIENT_LIMIT
    run.server_saturated = (run.server_cpu or 0) >= SERVER_LIMIT
    busy = results[0]["core_busy"]
    if pinning.enabled:
        ours = {pinning.server[0]: run.server_cpu or 0.0}
        for core, cpu in per_core.items():
            ours[core] = ours.get(core, 0.0) + cpu
        run.other_load = sum(max(0.0, busy[str(c)] - ours.get(c, 0.0)) for c in ours)
        run.disturbed = run.other_load >= DISTURBED
    steal = results[0].get("core_steal") or {}
    measured = [str(c) for c in (*pinning.server, *pinning.clients)] or list(steal)
    if any(c in steal for c in measured):
        run.steal = max(steal[c] for c in measured if c in steal)
        run.disturbed = run.disturbed or run.steal >= STOLEN
    keep = ("negotiated", "compressed_fraction", "stalled", "misaligned", "errors")
    keep += ("mismatched_replies", "closed_by_server", "connect_failures", "published")
    keep += ("disconnected",)
    run.details = {
        "client_processes": clients,
        "client_cpu_per_process": [round(r["client_cpu"], 3) for r in results],
        "core_busy": busy,
        "core_steal": steal,
        **{k: results[0][k] for k in keep if k in results[0]},
    }
    seen = ("stalled", "misaligned", "errors", "mismatched_replies", "disconnected")
    seen += ("connect_failures",)
    problems = [k for k in seen if any(r.get(k) for r in results)]
    if not run.value:
        problems.append("nothing completed")
    if problems:
        run.error = "load generator saw: " + ", ".join(problems)


def settle_rss(pid: int, limit: float = 6.0) -> int:
    """RSS once it stops moving (two readings 0.25 s apart within 0.5%)."""
    end = time.monotonic() + limit
    last = harness.rss_bytes(pid)
    while time.monotonic() < end:
        time.sleep(0.25)
        now = harness.rss_bytes(pid)
        if abs(now - last) <= 0.005 * last:
            return now
        last = now
    return last


def idle_memory(
    run: Run,
    scenario: Scenario,
    mode: Mode,
    pinning: harness.Pinning,
    clients: int,
    port: int,
    pid: int,
) -> None:
    deflate = ["--deflate"] if scenario.deflate else []
    # Warm the server's code paths (and, for deflate, zlib) with a few connections first.
    warm = loadgen(
        pinning, 0, ["idle", "--port", str(port), "--connections", "20", *deflate], stdin=True
    )
    assert warm.stdout is not None
    assert warm.stdin is not None
    warm.stdout.readline()
    warm.stdin.write("stop\n")
    warm.stdin.flush()
    finish(warm, timeout=30)
    time.sleep(0.5)
    baseline = settle_rss(pid)
    processes = []
    shares = split(mode.idle_connections, clients)
    for index in range(clients):
        args = ["idle", "--port", str(port), "--connections", str(shares[index]), *deflate]
        processes.append(loadgen(pinning, index, args, stdin=True))
    ready = []
    try:
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("the load generator exited before its connections were up")
            ready.append(json.loads(line))
        time.sleep(0.5)
        loaded = settle_rss(pid)
    finally:
        for process in processes:
            with contextlib.suppress(OSError):
                assert process.stdin is not None
                process.stdin.write("stop\n")
                process.stdin.flush()
        for process in processes:
            finish(process, timeout=60)
    connections = sum(r["connections"] for r in ready)
    run.value = (loaded - baseline) / connections / 1024 if connections else None
    latencies = sorted(v for r in ready for v in r["latency_us"])
    run.p50_ms = harness.percentile(latencies, 0.50) / 1000
    run.p99_ms = harness.percentile(latencies, 0.99) / 1000
    run.details = {
        "connections": connections,
        "failures": sum(r["failures"] for r in ready),
        "rss_baseline_mib": round(baseline / 2**20, 1),
        "rss_loaded_mib": round(loaded / 2**20, 1),
        "negotiated": sorted({h for r in ready for h in r["negotiated"]}),
        "setup_seconds": max(r["setup_seconds"] for r in ready),
        "client_processes": clients,
    }
    if run.details["failures"]:
        run.error = f"{run.details['failures']} connections failed"


def measure(
    system: str,
    scenario: Scenario,
    rep: int,
    mode: Mode,
    pinning: harness.Pinning,
    clients: int,
    *,
    traced: bool = False,
) -> Run:
    run = Run(system, scenario.name, rep, traced=traced)
    port = harness.free_port()
    started = time.monotonic()
    try:
        with harness.server_process(server_command(system, port), port, pinning) as server:
            time.sleep(0.3)
            if scenario.kind == "idle":
                idle_memory(run, scenario, mode, pinning, clients, port, server.pid)
            else:
                trace = harness.RESULTS / "logs" / f"strace-{port}.txt" if traced else None
                throughput(run, scenario, mode, pinning, clients, port, server.pid, trace)
    except Exception as exc:  # one failed run must not end the suite
        run.error = f"{type(exc).__name__}: {exc}"
    value = "-" if run.value is None else f"{run.value:,.1f}"
    flags = " client-limited" if run.client_limited else ""
    if run.disturbed:
        flags += f" DISTURBED (others used {run.other_load or 0:.0%}, {run.steal or 0:.0%} stolen)"
    if run.syscalls:
        flags += f" {run.syscalls['total']:.2f} syscalls each (under strace)"
    flags += f" ERROR {run.error}" if run.error else ""
    cpu = ""
    if run.client_cpu is not None:
        cpu = f" (client {run.client_cpu:.0%}, server {run.server_cpu or 0:.0%}"
        cpu += f", {run.per_cpu:,.0f}/CPU-s" if run.per_cpu else ""
        if run.server_user_us is not None:
            cpu += f", {run.server_user_us:.1f}+{run.server_system_us or 0:.1f} us user+sys"
        cpu += ")"
    print(
        f"  {scenario.name:<20} {system:<13} {value:>12} {scenario.unit:<15}"
        f" p50 {run.p50_ms or 0:7.2f} ms  p99 {run.p99_ms or 0:7.2f} ms{cpu}{flags}"
        f"  [{time.monotonic() - started:.0f} s]",
        flush=True,
    )
    return run


# -- summary -----------------------------------------------------------------------------


def usable(runs: Sequence[Run]) -> list[Run]:
    """The runs that count: no error, and, unless all were, not disturbed."""
    good = [r for r in runs if r.value is not None and r.error is None and not r.traced]
    return [r for r in good if not r.disturbed] or good


def median_of(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return harness.median(present) if present else None


def summarize(
    runs: list[Run], systems: Sequence[str], scenarios: Sequence[str]
) -> list[dict[str, Any]]:
    summary = []
    for scenario in scenarios:
        for system in systems:
            every = [r for r in runs if r.system == system and r.scenario == scenario]
            mine = [r for r in every if not r.traced]
            traced = [r.syscalls for r in every if r.traced and r.syscalls]
            if not mine:
                continue
            good = [r for r in mine if r.value is not None and r.error is None]
            # Runs during which other processes took a good share of the measured cores
            # are kept in the results but left out of the medians (unless all were).
            calm = [r for r in good if not r.disturbed]
            disturbed = len(good) - len(calm)
            good = calm or good
            values = [r.value for r in good if r.value is not None]
            per_cpu = median_of([r.per_cpu for r in good])
            summary.append(
                {
                    "scenario": scenario,
                    "system": system,
                    "unit": SCENARIOS[scenario].unit,
                    "runs": len(mine),
                    "failed": len(mine) - len(good) - (disturbed if calm else 0),
                    "disturbed": disturbed,
                    # Every usable run was disturbed: the medians come from those.
                    "all_disturbed": bool(good) and not calm,
                    "median": harness.median(values) if values else None,
                    "min": min(values) if values else None,
                    "max": max(values) if values else None,
                    "spread": harness.spread(values) if values else None,
                    "p50_ms": median_of([r.p50_ms for r in good]),
                    "p99_ms": median_of([r.p99_ms for r in good]),
                    "client_cpu": median_of([r.client_cpu for r in good]),
                    "server_cpu": median_of([r.server_cpu for r in good]),
                    # Throughput per server CPU-second (median of the runs' own ratios)
                    # and, its inverse, server CPU microseconds per message or delivery.
                    "per_cpu": per_cpu,
                    "us_per_delivery": 1e6 / per_cpu if per_cpu else None,
                    "client_limited": sum(r.client_limited for r in good),
                    "server_saturated": sum(r.server_saturated for r in good),
                    "other_load": median_of([r.other_load for r in good]),
                    # Server CPU microseconds per message, user and system (medians).
                    "us_user": median_of([r.server_user_us for r in good]),
                    "us_system": median_of([r.server_system_us for r in good]),
                    # The most stolen of any measured run (the disturbed ones included).
                    "steal": max((r.steal for r in mine if r.steal is not None), default=None),
                    "stolen": sum((r.steal or 0) >= STOLEN for r in mine),
                    "syscalls": traced[0] if traced else None,
                    "errors": sorted({r.error for r in mine if r.error}),
                }
            )
    return summary


@dataclass(frozen=True)
class Target:
    """One of the benchmark's targets, each a figure of one run.

    ``metric`` says what is compared: ``median`` (the scenario's own unit), ``per_cpu``
    (deliveries per server CPU-second) or ``us_per_delivery`` (server CPU microseconds per
    delivery). A ratio is the numerator's median over the denominator's; the ratio of
    each repetition (the two systems' runs of the same repetition) is reported too, and a
    ``steady`` target must hold in every repetition, not only in the medians. ``kind`` is
    ``min`` (at least ``bound``), ``max`` (at most) or ``report`` (no bound: a figure to
    show). ``p99`` is the latency target: see :func:`latency_target`."""

    number: int
    name: str
    numerator: tuple[str, str]
    denominator: tuple[str, str] | None
    bound: float | None
    kind: str
    metric: str = "median"
    steady: bool = False
    unit: str = "x"


TARGETS = (
    Target(
        1,
        "native echo vs FastAPI/uvicorn, in every repetition",
        ("native", "echo"),
        ("fastapi", "echo"),
        1.2,
        "min",
        steady=True,
    ),
    Target(
        1,
        "native echo vs websockets' Trio server (raw echo), in every repetition",
        ("native", "echo"),
        ("websockets-trio", "echo"),
        2.0,
        "min",
        steady=True,
    ),
    Target(
        1,
        "native echo vs the websockets asyncio server on uvloop (raw echo)",
        ("native", "echo"),
        ("websockets", "echo"),
        None,
        "report",
    ),
    Target(
        2,
        "native handshakes/s vs FastAPI/uvicorn, in every repetition",
        ("native", "connect"),
        ("fastapi", "connect"),
        1.0,
        "min",
        steady=True,
    ),
    Target(
        3,
        "native fan-out 200 vs Bun, deliveries per server CPU-second, in every repetition",
        ("native", "fanout-200"),
        ("bun", "fanout-200"),
        0.5,
        "min",
        metric="per_cpu",
        steady=True,
    ),
    Target(
        3,
        "native fan-out 200 vs FastAPI/uvicorn, deliveries/s",
        ("native", "fanout-200"),
        ("fastapi", "fanout-200"),
        None,
        "report",
    ),
    Target(
        3,
        "native fan-out 200, server CPU per delivery vs the floor (times the floor's)",
        ("native", "fanout-200"),
        ("floor", "fanout-200"),
        None,
        "report",
        metric="us_per_delivery",
    ),
    Target(
        4,
        "ASGI mode echo vs plain hypercorn-trio, in every repetition",
        ("asgi", "echo"),
        ("hypercorn", "echo"),
        0.8,
        "min",
        steady=True,
    ),
    Target(
        4,
        "ASGI mode fan-out 200 vs plain hypercorn-trio, in every repetition",
        ("asgi", "fanout-200"),
        ("hypercorn", "fanout-200"),
        0.8,
        "min",
        steady=True,
    ),
    Target(
        5,
        "native idle memory, compression off",
        ("native", "idle"),
        None,
        15.0,
        "max",
        unit=" KiB/conn",
    ),
    Target(
        5,
        "native idle memory, permessage-deflate",
        ("native", "idle-deflate"),
        None,
        None,
        "report",
        unit=" KiB/conn",
    ),
    Target(
        6,
        "native p99 latency vs the baseline, in the cells whose throughput rose (worst)",
        ("native", "*"),
        None,
        1.0,
        "max",
        metric="p99",
    ),
)


def metric_of(cell: dict[str, Any] | Run, metric: str) -> float | None:
    """A target's figure of a summary cell (medians) or of one run."""
    if isinstance(cell, Run):
        value, per_cpu = cell.value, cell.per_cpu
    else:
        value, per_cpu = cell["median"], cell["per_cpu"]
    if metric == "median":
        return value
    if metric == "per_cpu":
        return per_cpu
    return 1e6 / per_cpu if per_cpu else None  # us_per_delivery


def latency_target(
    target: Target, summary: list[dict[str, Any]], baseline: dict[str, Any] | None
) -> dict[str, Any]:
    """Target 6: native p99 must not grow while throughput rises. Against the baseline
    (another results file, by default the committed full run), in every throughput cell
    of the native transport whose median rose (or held): p99 now / p99 then, the worst of
    them. Cells whose throughput fell are listed, not judged."""
    out: dict[str, Any] = {
        "target": target.name,
        "number": target.number,
        "kind": target.kind,
        "bound": target.bound,
        "unit": target.unit,
        "value": None,
        "met": None,
    }
    if not baseline:
        out["caveat"] = "no baseline results file"
        return out
    then = baseline.get("native", {})
    cells = []
    for s in summary:
        if s["system"] != "native" or not SCENARIOS[s["scenario"]].higher_is_better:
            continue
        old = then.get(s["scenario"])
        if not old or not old.get("p99_ms") or s["median"] is None or s["p99_ms"] is None:
            continue
        cells.append(
            {
                "scenario": s["scenario"],
                "throughput_ratio": s["median"] / old["median"],
                "p99_ms": s["p99_ms"],
                "baseline_p99_ms": old["p99_ms"],
                "p99_ratio": s["p99_ms"] / old["p99_ms"],
                "judged": s["median"] >= old["median"],
            }
        )
    out["cells"] = cells
    out["baseline"] = f"{baseline.get('file', '?')} ({baseline.get('date', '?')})"
    judged = [c for c in cells if c["judged"]]
    if not judged:
        out["caveat"] = "throughput rose in no cell against the baseline"
        return out
    worst = max(judged, key=lambda c: c["p99_ratio"])
    out["value"] = worst["p99_ratio"]
    out["met"] = out["value"] <= (target.bound or 1.0)
    out["caveat"] = f"worst: {worst['scenario']}; baseline {out['baseline']}"
    return out


def targets(
    summary: list[dict[str, Any]],
    runs: Sequence[Run] = (),
    baseline: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    cells = {(s["system"], s["scenario"]): s for s in summary}
    out = []
    for target in TARGETS:
        if target.metric == "p99":
            out.append(latency_target(target, summary, baseline))
            continue
        top, bottom = target.numerator, target.denominator
        a = cells.get(top)
        b = cells.get(bottom) if bottom else None
        result: dict[str, Any] = {
            "target": target.name,
            "number": target.number,
            "kind": target.kind,
            "bound": target.bound,
            "unit": target.unit,
            "metric": target.metric,
            "steady": target.steady,
            "value": None,
            "met": None,
        }
        top_value = metric_of(a, target.metric) if a else None
        bottom_value = metric_of(b, target.metric) if b else None
        if top_value is None or (bottom and not bottom_value):
            out.append(result)
            continue
        value = top_value / bottom_value if bottom_value else top_value
        per_rep: list[float] = []
        if bottom:
            for rep in sorted({r.rep for r in runs}):
                mine = usable([r for r in runs if (r.system, r.scenario, r.rep) == (*top, rep)])
                theirs = usable(
                    [r for r in runs if (r.system, r.scenario, r.rep) == (*bottom, rep)]
                )
                if mine and theirs:
                    x, y = metric_of(mine[0], target.metric), metric_of(theirs[0], target.metric)
                    if x is not None and y:
                        per_rep.append(x / y)
        met = None
        if target.bound is not None:
            met = value >= target.bound if target.kind == "min" else value <= target.bound
            if target.steady and per_rep:
                met = met and all(r >= target.bound for r in per_rep)
        caveat = []
        for key, cell in ((top, a), (bottom, b)):
            if key and cell and cell["client_limited"]:
                system = key[0]
                if target.metric != "median":
                    busy = cell["server_cpu"] or 0
                    caveat.append(f"{system} client-limited (its server {busy:.0%} busy)")
                elif cell is a:
                    caveat.append(f"{system} client-limited, so a lower bound")
                else:
                    caveat.append(f"{system} client-limited, so the ratio may be high")
        for key, cell in ((top, a), (bottom, b)):
            if key and cell and cell.get("all_disturbed"):
                caveat.append(f"{key[0]} disturbed in every run (other processes or steal)")
        result.update(
            {
                "value": value,
                "met": met,
                "numerator": top_value,
                "denominator": bottom_value,
                "per_rep": per_rep,
                "caveat": "; ".join(caveat),
            }
        )
        out.append(result)
    return out


def read_baseline(path: Path | None) -> dict[str, Any] | None:
    """The native transport's cells of another results file, for the latency target."""
    if path is None or not path.exists():
        return None
    try:
        data = harness.read_json(path)
    except (OSError, ValueError):
        return None
    native = {
        s["scenario"]: {k: s.get(k) for k in ("median", "p50_ms", "p99_ms")}
        for s in data.get("summary", [])
        if s["system"] == "native" and s.get("median") is not None
    }
    try:
        shown = str(path.resolve().relative_to(harness.ROOT))
    except ValueError:
        shown = str(path)
    return {
        "file": shown,
        "date": data.get("meta", {}).get("date", "?")[:10],
        "mode": data.get("meta", {}).get("mode"),
        "native": native,
    }


def versions() -> dict[str, str]:
    found = {}
    for name in (
        "trio",
        "hypercorn",
        "wsproto",
        "websockets",
        "attrs",
        "cattrs",
        "orjson",
        "fastapi",
        "pydantic",
        "uvicorn",
        "uvloop",
        "picows",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    if harness.BUN.exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            found["bun"] = subprocess.run(
                [str(harness.BUN), "--version"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout.strip()
    return found


def describe_target(t: dict[str, Any]) -> str:
    """One line: the figure, the bound, the verdict, the repetitions, the caveats."""
    if t["value"] is None:
        return f"[{t['number']}] {t['target']}: not measured" + (
            f" ({t['caveat']})" if t.get("caveat") else ""
        )
    text = f"[{t['number']}] {t['target']}: {t['value']:,.2f}{t['unit']}"
    if t["bound"] is not None:
        text += f" (target {'>=' if t['kind'] == 'min' else '<='} {t['bound']:g})"
        text += " met" if t["met"] else " MISSED"
    else:
        text += " (reported)"
    if len(t.get("per_rep") or ()) > 1:
        text += f"; repetitions {min(t['per_rep']):.2f}-{max(t['per_rep']):.2f}"
    if t.get("caveat"):
        text += f"; {t['caveat']}"
    return text


def print_summary(summary: list[dict[str, Any]], goals: list[dict[str, Any]]) -> None:
    print("\nmedians")
    for s in summary:
        median = "-" if s["median"] is None else f"{s['median']:,.1f}"
        spread = "" if s["spread"] is None else f"spread {s['spread']:.0%}"
        latency = ""
        if s["p50_ms"] is not None and SCENARIOS[s["scenario"]].higher_is_better:
            latency = f" p50 {s['p50_ms']:.2f} / p99 {s['p99_ms']:.2f} ms"
        cpu = ""
        if s["per_cpu"]:
            cpu = f" {s['per_cpu']:,.0f}/CPU-s ({s['us_per_delivery']:.2f} us each"
            if s.get("us_user") is not None:
                cpu += f": {s['us_user']:.2f} user + {s['us_system'] or 0:.2f} sys"
            cpu += ")"
        if s.get("steal"):
            cpu += f" steal up to {s['steal']:.1%}"
        if s.get("syscalls"):
            cpu += f" {s['syscalls']['total']:.2f} syscalls/msg"
        limited = (
            f" client-limited in {s['client_limited']}/{s['runs']}" if s["client_limited"] else ""
        )
        name = f"{s['scenario']:<20} {s['system']:<13}"
        print(f"  {name} {median:>12} {s['unit']:<15} {spread}{latency}{cpu}{limited}")
    print("\ntargets")
    for t in goals:
        print("  " + describe_target(t))
        for cell in t.get("cells", ()):
            print(
                f"      {cell['scenario']:<20} throughput x{cell['throughput_ratio']:.2f}, "
                f"p99 {cell['p99_ms']:.2f} ms vs {cell['baseline_p99_ms']:.2f} ms"
                f" (x{cell['p99_ratio']:.2f}){'' if cell['judged'] else ', not judged'}"
            )


def print_ratios(ratios: list[dict[str, Any]]) -> None:
    if not ratios:
        return
    print(f"\n{figures.REFERENCE} / peer, per repetition (median, min-max; * disturbed)")
    for r in ratios:
        each = " ".join(f"{x['ratio']:.2f}{'*' if x['disturbed'] else ''}" for x in r["reps"])
        ratio = r["ratio"]
        print(
            f"  {r['scenario']:<20} {r['peer']:<15} x{ratio['median']:.2f} "
            f"({ratio['min']:.2f}-{ratio['max']:.2f})  [{each}]"
        )


# -- main --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=sorted(MODES), default="short")
    parser.add_argument(
        "--systems", help="comma-separated, of " + ",".join((*SYSTEMS, *EXTRA_SYSTEMS))
    )
    parser.add_argument("--scenarios", help="comma-separated, of " + ",".join(SCENARIOS))
    parser.add_argument("--reps", type=int, help="repetitions (default per mode)")
    parser.add_argument("--seconds", type=float, help="measured window (default per mode)")
    parser.add_argument(
        "--client-processes",
        type=int,
        help="load-generator processes (default: one per client core)",
    )
    parser.add_argument("--out", type=Path, help="results file (default bench/results/MODE.json)")
    parser.add_argument(
        "--syscalls",
        action="store_true",
        help="after the measured repetitions, one more under strace -c -f: the server's "
        "system calls per message by kind (needs strace; its timings are not counted)",
    )
    parser.add_argument(
        "--baseline",
        default=str(harness.RESULTS / "full.json"),
        help="results file the native p99 target compares with ('' for none; default the "
        "committed bench/results/full.json, read before this run writes anything)",
    )
    args = parser.parse_args(argv)

    mode = MODES[args.mode]
    if args.reps:
        mode.reps = args.reps
    if args.seconds:
        mode.seconds = args.seconds
    scenarios = tuple(args.scenarios.split(",")) if args.scenarios else mode.scenarios
    systems = list(args.systems.split(",") if args.systems else SYSTEMS)
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name}")
    if args.syscalls and figures.strace() is None:
        parser.error(
            "--syscalls needs strace, which is not installed "
            "(apt-get install strace, or leave out --syscalls)"
        )
    notes = []
    for name in list(systems):
        if name not in SYSTEMS and name not in EXTRA_SYSTEMS:
            parser.error(f"unknown system {name}")
        if name == "bun" and not harness.BUN.exists():
            systems.remove(name)
            notes.append(
                "Bun left out: bench/bun/node_modules has no bun (npm ci --prefix bench/bun)"
            )
    pinning = harness.Pinning.detect()
    clients = args.client_processes or max(1, len(pinning.clients))
    fd_limit = harness.raise_fd_limit()
    if pinning.enabled:
        os.sched_setaffinity(0, set(pinning.clients))  # this process mostly waits
    out = args.out or harness.RESULTS / f"{args.mode}.json"
    baseline = read_baseline(Path(args.baseline) if args.baseline else None)
    command = "python " + " ".join(
        shlex.quote(a) for a in ["bench/run.py", *(argv if argv is not None else sys.argv[1:])]
    )
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "mode": args.mode,
        "machine": harness.machine(),
        "pinning": pinning.describe(),
        "client_processes": clients,
        "fd_limit": fd_limit,
        "params": asdict(mode),
        "versions": versions(),
        "labels": LABELS,
        "notes": notes,
        "baseline": baseline,
        "syscalls": args.syscalls,
    }
    for note in notes:
        print(note)
    count = sum(serves(a, b) for a in systems for b in scenarios) * mode.reps
    size = f"{len(systems)} systems x {len(scenarios)} scenarios x {mode.reps} repetitions"
    size += f" ({count} runs)"
    print(f"{args.mode}: {size}; {meta['pinning']}; results in {out}")
    runs: list[Run] = []
    started = time.monotonic()
    traced_reps = 1 if args.syscalls else 0
    for rep in range(mode.reps + traced_reps):
        traced = rep >= mode.reps
        if traced:
            print("one more repetition under strace (system calls; timings not counted)")
        else:
            print(f"repetition {rep + 1}/{mode.reps}", flush=True)
        for scenario in scenarios:
            if traced and SCENARIOS[scenario].kind == "idle":
                continue
            # A different order each repetition, so that drift in the machine's load
            # does not always fall on the same system. Each scenario's systems run one
            # after the other, so the ratios of one repetition compare like with like.
            shift = rep % len(systems)
            for system in systems[shift:] + systems[:shift]:
                if not serves(system, scenario):
                    continue
                runs.append(
                    measure(
                        system, SCENARIOS[scenario], rep, mode, pinning, clients, traced=traced
                    )
                )
                summary = summarize(runs, systems, scenarios)
                meta["elapsed_seconds"] = round(time.monotonic() - started)
                meta["loadavg_at_end"] = os.getloadavg()[0]
                every = [asdict(r) for r in runs]
                harness.write_json(
                    out,
                    {
                        "meta": meta,
                        "summary": summary,
                        "targets": targets(summary, runs, baseline),
                        "ratios": figures.rep_ratios(every),
                        "runs": every,
                    },
                )
    summary = summarize(runs, systems, scenarios)
    print_summary(summary, targets(summary, runs, baseline))
    print_ratios(figures.rep_ratios([asdict(r) for r in runs]))
    print(f"\n{len(runs)} runs in {time.monotonic() - started:.0f} s; results in {out}")


if __name__ == "__main__":
    main()
