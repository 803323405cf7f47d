"""What every benchmark shares: ports, CPU pinning, server processes, /proc readings,
medians and percentiles, and the JSON results.

Nothing here measures anything by itself; ``run.py`` (the suite), ``loadgen.py`` (the
picows load generator) and ``servers.py`` (the servers) use it, and so do the older
single-purpose scripts (``soak.py``, ``redis_memory.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
BUN = BENCH / "bun" / "node_modules" / ".bin" / "bun"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# -- ports -------------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the benchmarks never bind anything else)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int, timeout: float = 20.0, process: subprocess.Popen[Any] | None = None
) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


# -- pinning -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pinning:
    """Which cores the server and the load generator get: the server core 0 and the
    clients the others when there are at least two; nothing is pinned on one core."""

    server: tuple[int, ...]
    clients: tuple[int, ...]

    @classmethod
    def detect(cls) -> Pinning:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2 or shutil.which("taskset") is None:
            return cls((), ())
        return cls((cores[0],), tuple(cores[1:]))

    @property
    def enabled(self) -> bool:
        return bool(self.server)

    def server_prefix(self) -> list[str]:
        return ["taskset", "-c", ",".join(map(str, self.server))] if self.server else []

    def client_prefix(self, index: int = 0) -> list[str]:
        if not self.clients:
            return []
        return ["taskset", "-c", str(self.clients[index % len(self.clients)])]

    def describe(self) -> str:
        if not self.enabled:
            return "not pinned (fewer than 2 cores or no taskset)"
        clients = ",".join(map(str, self.clients))
        return f"server on core {self.server[0]}, load generator on core(s) {clients}"


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's open-file limit (children inherit it) as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- processes ---------------------------------------------------------------------------


@contextlib.contextmanager
def server_process(
    command: Sequence[str], port: int, pinning: Pinning, *, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server (pinned to the server core), wait for its port, and stop it (by
    its PID) on the way out."""
    log = RESULTS / "logs" / f"server-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*pinning.server_prefix(), *command], cwd=cwd, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            wait_for_port(port, process=process)
            yield process
        finally:
            stop_process(process)
    if log.stat().st_size == 0:
        log.unlink()


def stop_process(process: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL. (Not SIGINT: a
    process started from a background job of a non-interactive shell ignores it.)"""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)


def python_command(script: str, *args: str) -> list[str]:
    return [sys.executable, str(BENCH / script), *args]


# -- child processes that wait for "go" ----------------------------------------------------


def start_ready_child(
    command: Sequence[str], name: str, *, code: Path = ROOT, quiet: bool = False
) -> subprocess.Popen[bytes]:
    """Start a child that prints ``ready`` once set up, then waits for a line on stdin
    before it measures (``code``: the tree it imports the library from); wait for that
    ``ready``."""
    process = subprocess.Popen(
        list(command),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
        env={**os.environ, "PYTHONPATH": str(code)},
        cwd=code,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        raise SystemExit(f"{name} failed to start")
    return process


def go_and_collect(
    children: Sequence[tuple[str, subprocess.Popen[bytes]]], timeout: float
) -> list[dict[str, Any]]:
    """Tell every ``(name, child)`` to go at once, then wait for each; the JSON object
    each printed last, in the same order."""
    for _, process in children:
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        process.stdin.flush()
    results = []
    for name, process in children:
        out, _ = process.communicate(timeout=timeout)
        if process.returncode:
            raise SystemExit(f"{name} failed")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


# -- /proc readings ----------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    return sum(process_cpu_split(pid))


def process_cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process (all its threads), in seconds: ``utime``
    and ``stime`` of /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process, from /proc/PID/status."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def core_times() -> dict[int, tuple[float, float]]:
    """Per core: (busy seconds, total seconds) since boot, from /proc/stat."""
    times: dict[int, tuple[float, float]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(v) for v in values[:8]]
        idle = ticks[3] + ticks[4]  # idle + iowait
        total = sum(ticks)
        times[int(name[3:])] = ((total - idle) / CLOCK_TICKS, total / CLOCK_TICKS)
    return times


def core_steal() -> dict[int, tuple[float, float]]:
    """Per core: (stolen seconds, total seconds) since boot, from /proc/stat: the time
    the hypervisor ran something else while this core had work (the ``steal`` column)."""
    times: dict[int, tuple[float, float]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(v) for v in values[:8]]
        steal = ticks[7] if len(ticks) > 7 else 0
        times[int(name[3:])] = (steal / CLOCK_TICKS, sum(ticks) / CLOCK_TICKS)
    return times


def core_busy(
    before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]]
) -> dict[int, float]:
    """Fraction of each core that was busy between two :func:`core_times` readings."""
    busy: dict[int, float] = {}
    for core, (b1, t1) in after.items():
        b0, t0 = before.get(core, (b1, t1))
        busy[core] = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
    return busy


def machine() -> dict[str, Any]:
    """What the results were measured on."""
    cpuinfo: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if not sep and cpuinfo:
                break  # the first core's block is enough
            if sep:
                cpuinfo.setdefault(key.strip(), value.strip())
    model = cpuinfo.get("model name", "")
    memory = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    return {
        "cores": os.cpu_count() or 1,
        "cpu": model,
        "cpu_mhz": cpuinfo.get("cpu MHz", ""),
        "cache": cpuinfo.get("cache size", ""),
        # A virtual machine's cores are shared with other guests: see the steal figures.
        "virtual": "hypervisor" in cpuinfo.get("flags", "").split(),
        "memory_gib": round(memory / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_build": f"{platform.python_implementation()} {platform.python_compiler()}",
        "loadavg_at_start": os.getloadavg()[0],
    }


# -- statistics --------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def spread(values: Sequence[float]) -> float:
    """(max - min) / median: how far apart the repetitions were."""
    if len(values) < 2:
        return 0.0
    middle = median(values)
    return (max(values) - min(values)) / middle if middle else 0.0


# -- JSON results ------------------------------------------------------------------------


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
