"""The benchmark suite: this project (ASGI under hypercorn-trio, and native) against the
plain hypercorn-trio app (the floor), FastAPI + pydantic on uvicorn (what a Python user
would write instead) and Bun (the ceiling), on one machine in one run.

    python bench/run.py --mode short     # a quick check, about 2 minutes
    python bench/run.py --mode full      # the documentation's figures, about 15 minutes
    python bench/run.py --mode full --systems native,fastapi --scenarios echo,fanout-200

Each run starts a fresh server process (``servers.py``, or ``bun/server.ts``) pinned to
core 0 and picows load generators (``loadgen.py``) pinned to the other core(s); the
repetitions go round the systems in a different order each time; results (every
repetition, medians, p50/p99 latencies, CPU of client and server, how busy the cores
were) go to ``bench/results/MODE.json`` after every run. ``report.py`` turns a results
file into the docs' table and chart. 127.0.0.1 only; every run is bounded in time.
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

import harness

SYSTEMS = ("asgi", "native", "hypercorn", "fastapi", "bun")
EXTRA_SYSTEMS = ("native-history",)
"""Accepted by ``--systems``, not run by default (``bench/history_live.py`` uses them)."""
LABELS = {
    "asgi": "trio_wsroutes, ASGI on hypercorn-trio",
    "native": "trio_wsroutes, native transport",
    "native-history": "trio_wsroutes, native transport, history on the topic (1 000 kept)",
    "hypercorn": "plain ASGI app on hypercorn-trio (floor)",
    "fastapi": "FastAPI + pydantic on uvicorn",
    "bun": "Bun.serve + Zod (ceiling)",
}
CLIENT_LIMIT = 0.9  # a load-generator core this busy means the client may be the limit
SERVER_LIMIT = 0.9
DISTURBED = 0.25  # other processes used this much of the measured cores: left out


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
        scenarios=("echo", "fanout-200", "fanout-200-deflate", "connect", "idle"),
    ),
    "full": Mode(reps=5, warmup=2.0, seconds=5.0, idle_connections=5000),
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
    client_limited: bool = False
    server_saturated: bool = False
    other_load: float | None = None
    disturbed: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


# -- one run -----------------------------------------------------------------------------


def server_command(system: str, port: int) -> list[str]:
    if system == "bun":
        return [str(harness.BUN), str(harness.BENCH / "bun" / "server.ts"), str(port)]
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
    run.client_limited = run.client_cpu >= CLIENT_LIMIT
    run.server_saturated = (run.server_cpu or 0) >= SERVER_LIMIT
    busy = results[0]["core_busy"]
    if pinning.enabled:
        ours = {pinning.server[0]: run.server_cpu or 0.0}
        for core, cpu in per_core.items():
            ours[core] = ours.get(core, 0.0) + cpu
        run.other_load = sum(max(0.0, busy[str(c)] - ours.get(c, 0.0)) for c in ours)
        run.disturbed = run.other_load >= DISTURBED
    keep = ("negotiated", "compressed_fraction", "stalled", "misaligned", "errors")
    keep += ("mismatched_replies", "closed_by_server", "connect_failures", "published")
    keep += ("disconnected",)
    run.details = {
        # What the server would do with a whole core, if it scales: the estimate to use
        # when the client, not the server, was the limit.
        "per_server_core": run.value / run.server_cpu if run.server_cpu else None,
        "client_processes": clients,
        "client_cpu_per_process": [round(r["client_cpu"], 3) for r in results],
        "core_busy": busy,
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
    system: str, scenario: Scenario, rep: int, mode: Mode, pinning: harness.Pinning, clients: int
) -> Run:
    run = Run(system, scenario.name, rep)
    port = harness.free_port()
    started = time.monotonic()
    try:
        with harness.server_process(server_command(system, port), port, pinning) as server:
            time.sleep(0.3)
            if scenario.kind == "idle":
                idle_memory(run, scenario, mode, pinning, clients, port, server.pid)
            else:
                throughput(run, scenario, mode, pinning, clients, port, server.pid)
    except Exception as exc:  # one failed run must not end the suite
        run.error = f"{type(exc).__name__}: {exc}"
    value = "-" if run.value is None else f"{run.value:,.1f}"
    flags = " client-limited" if run.client_limited else ""
    flags += f" DISTURBED (others used {run.other_load:.0%})" if run.disturbed else ""
    flags += f" ERROR {run.error}" if run.error else ""
    cpu = ""
    if run.client_cpu is not None:
        cpu = f" (client {run.client_cpu:.0%}, server {run.server_cpu or 0:.0%})"
    print(
        f"  {scenario.name:<20} {system:<10} {value:>12} {scenario.unit:<15}"
        f" p50 {run.p50_ms or 0:7.2f} ms  p99 {run.p99_ms or 0:7.2f} ms{cpu}{flags}"
        f"  [{time.monotonic() - started:.0f} s]",
        flush=True,
    )
    return run


# -- summary -----------------------------------------------------------------------------


def summarize(
    runs: list[Run], systems: Sequence[str], scenarios: Sequence[str]
) -> list[dict[str, Any]]:
    summary = []
    for scenario in scenarios:
        for system in systems:
            mine = [r for r in runs if r.system == system and r.scenario == scenario]
            good = [r for r in mine if r.value is not None and r.error is None]
            if not mine:
                continue
            # Runs during which other processes took a good share of the measured cores
            # are kept in the results but left out of the medians (unless all were).
            calm = [r for r in good if not r.disturbed]
            disturbed = len(good) - len(calm)
            good = calm or good
            values = [r.value for r in good if r.value is not None]
            summary.append(
                {
                    "scenario": scenario,
                    "system": system,
                    "unit": SCENARIOS[scenario].unit,
                    "runs": len(mine),
                    "failed": len(mine) - len(good) - (disturbed if calm else 0),
                    "disturbed": disturbed,
                    "median": harness.median(values) if values else None,
                    "min": min(values) if values else None,
                    "max": max(values) if values else None,
                    "spread": harness.spread(values) if values else None,
                    "p50_ms": harness.median([r.p50_ms for r in good if r.p50_ms is not None])
                    if good
                    else None,
                    "p99_ms": harness.median([r.p99_ms for r in good if r.p99_ms is not None])
                    if good
                    else None,
                    "client_cpu": harness.median(
                        [r.client_cpu for r in good if r.client_cpu is not None]
                    )
                    if any(r.client_cpu is not None for r in good)
                    else None,
                    "server_cpu": harness.median(
                        [r.server_cpu for r in good if r.server_cpu is not None]
                    )
                    if any(r.server_cpu is not None for r in good)
                    else None,
                    "client_limited": sum(r.client_limited for r in good),
                    "other_load": harness.median(
                        [r.other_load for r in good if r.other_load is not None]
                    )
                    if any(r.other_load is not None for r in good)
                    else None,
                    "errors": sorted({r.error for r in mine if r.error}),
                }
            )
    return summary


TARGETS = (
    # name, numerator, denominator (or None: an absolute bound), bound, "min" or "max"
    (
        "ASGI mode echo vs plain hypercorn-trio",
        ("asgi", "echo"),
        ("hypercorn", "echo"),
        0.8,
        "min",
    ),
    ("native echo vs FastAPI/uvicorn", ("native", "echo"), ("fastapi", "echo"), 1.0, "min"),
    (
        "native fan-out 200 vs plain hypercorn-trio",
        ("native", "fanout-200"),
        ("hypercorn", "fanout-200"),
        5.0,
        "min",
    ),
    (
        "native fan-out 200 vs FastAPI/uvicorn",
        ("native", "fanout-200"),
        ("fastapi", "fanout-200"),
        1.5,
        "min",
    ),
    (
        "native idle memory, compression off (KiB/connection)",
        ("native", "idle"),
        None,
        30.0,
        "max",
    ),
)


def targets(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    medians = {(s["system"], s["scenario"]): s for s in summary}
    out = []
    for name, top, bottom, bound, kind in TARGETS:
        a = medians.get(top)
        b = medians.get(bottom) if bottom else None
        if a is None or a["median"] is None or (bottom and (b is None or b["median"] is None)):
            out.append({"target": name, "value": None, "bound": bound, "met": None})
            continue
        value = a["median"] / b["median"] if b else a["median"]
        met = value >= bound if kind == "min" else value <= bound
        caveat = []
        if a["client_limited"]:
            caveat.append(f"{top[0]} client-limited, so a lower bound")
        if b and b["client_limited"]:
            caveat.append(
                f"{bottom[0] if bottom else ''} client-limited, so the ratio may be high"
            )
        out.append(
            {
                "target": name,
                "value": value,
                "bound": bound,
                "kind": kind,
                "met": met,
                "numerator": a["median"],
                "denominator": b["median"] if b else None,
                "caveat": "; ".join(caveat),
            }
        )
    return out


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


def print_summary(summary: list[dict[str, Any]], goals: list[dict[str, Any]]) -> None:
    print("\nmedians")
    for s in summary:
        median = "-" if s["median"] is None else f"{s['median']:,.1f}"
        spread = "" if s["spread"] is None else f"spread {s['spread']:.0%}"
        limited = (
            f" client-limited in {s['client_limited']}/{s['runs']}" if s["client_limited"] else ""
        )
        name = f"{s['scenario']:<20} {s['system']:<10}"
        print(f"  {name} {median:>12} {s['unit']:<15} {spread}{limited}")
    print("\ntargets")
    for t in goals:
        if t["value"] is None:
            print(f"  {t['target']}: not measured")
            continue
        verdict = "met" if t["met"] else "MISSED"
        caveat = f" ({t['caveat']})" if t.get("caveat") else ""
        bound = f"{'>=' if t['kind'] == 'min' else '<='} {t['bound']}"
        print(f"  {t['target']}: {t['value']:.2f} (target {bound}) {verdict}{caveat}")


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
    }
    for note in notes:
        print(note)
    size = f"{len(systems)} systems x {len(scenarios)} scenarios x {mode.reps} repetitions"
    print(f"{args.mode}: {size}; {meta['pinning']}; results in {out}")
    runs: list[Run] = []
    started = time.monotonic()
    for rep in range(mode.reps):
        print(f"repetition {rep + 1}/{mode.reps}", flush=True)
        for scenario in scenarios:
            # A different order each repetition, so that drift in the machine's load
            # does not always fall on the same system.
            shift = rep % len(systems)
            for system in systems[shift:] + systems[:shift]:
                runs.append(measure(system, SCENARIOS[scenario], rep, mode, pinning, clients))
                summary = summarize(runs, systems, scenarios)
                meta["elapsed_seconds"] = round(time.monotonic() - started)
                meta["loadavg_at_end"] = os.getloadavg()[0]
                harness.write_json(
                    out,
                    {
                        "meta": meta,
                        "summary": summary,
                        "targets": targets(summary),
                        "runs": [asdict(r) for r in runs],
                    },
                )
    summary = summarize(runs, systems, scenarios)
    print_summary(summary, targets(summary))
    print(f"\n{len(runs)} runs in {time.monotonic() - started:.0f} s; results in {out}")


if __name__ == "__main__":
    main()
