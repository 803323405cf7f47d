"""What makes the suite's figures explain themselves: the system calls of a server
(``strace -c``) and the ratios of the native transport to each peer, repetition by
repetition.

``loadgen.py`` traces the server for the measured window when ``run.py --syscalls`` asks
it to; ``run.py`` and ``report.py`` compute the ratios (``report.py`` for results files
written before ``run.py`` kept them).
"""

from __future__ import annotations

import contextlib
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import harness

REFERENCE = "native"
SHOWN_PER_MESSAGE = 0.05
"""A report names the system calls made at least this often per message; the rest are
summed as ``other``."""


def strace() -> str | None:
    """Where strace is, or None when it is not installed."""
    return shutil.which("strace")


class SyscallTrace:
    """``strace -c -f -p PID`` on the server processes, from :meth:`start` to
    :meth:`stop`: how many calls of each kind they made in between."""

    def __init__(self, pids: Sequence[int], output: Path) -> None:
        self.pids = list(pids)
        self.output = output
        self.process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Attach, and return once strace says every process is attached."""
        path = strace()
        if path is None:
            raise RuntimeError("strace is not installed (apt-get install strace)")
        command = [path, "-c", "-f", "-o", str(self.output)]
        for pid in self.pids:
            command += ["-p", str(pid)]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        attached = 0
        end = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stderr, selectors.EVENT_READ)
            while attached < len(self.pids) and time.monotonic() < end:
                if not selector.select(max(0.0, end - time.monotonic())):
                    break
                line = self.process.stderr.readline()
                if not line:
                    break
                attached += "attached" in line
        if attached < len(self.pids):
            self.stop()
            raise RuntimeError("strace could not attach to the server")

    def stop(self) -> dict[str, int]:
        """Detach (SIGINT) and return the calls by name."""
        if self.process is None:
            return {}
        process, self.process = self.process, None
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            harness.stop_process(process)
        if process.stderr is not None:
            process.stderr.close()
        try:
            return parse_strace_summary(self.output.read_text())
        except OSError:
            return {}
        finally:
            self.output.unlink(missing_ok=True)


def parse_strace_summary(text: str) -> dict[str, int]:
    """Calls by system call name from the table ``strace -c`` writes (``% time seconds
    usecs/call calls [errors] syscall``)."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) not in (5, 6) or fields[-1] == "total":
            continue
        try:
            float(fields[0])
            count = int(fields[3])
        except ValueError:
            continue  # the header, the rules
        calls[fields[-1]] = calls.get(fields[-1], 0) + count
    return calls


def per_message(calls: Mapping[str, int], messages: float) -> dict[str, float]:
    """Calls per message of every kind, the most frequent first, and of all of them as
    ``total``."""
    if not messages:
        return {}
    out = {name: round(n / messages, 3) for name, n in sorted(calls.items(), key=lambda c: -c[1])}
    out["total"] = round(sum(calls.values()) / messages, 3)
    return out


def shown_syscalls(calls: Mapping[str, float], most: int = 6) -> list[tuple[str, float]]:
    """The kinds a report names (the ``most`` most frequent of those made at least
    :data:`SHOWN_PER_MESSAGE` times per message), then ``other`` for the rest."""
    kinds = sorted(((k, v) for k, v in calls.items() if k != "total"), key=lambda c: -c[1])
    named = [(k, v) for k, v in kinds if v >= SHOWN_PER_MESSAGE][:most]
    rest = sum(v for k, v in kinds[len(named) :])
    return named + ([("other", rest)] if rest >= 0.005 else [])


# -- ratios of the native transport to each peer -----------------------------------------


def counted(run: Mapping[str, Any]) -> bool:
    """A run whose figures count: a value, no error, not under strace."""
    return run.get("value") is not None and not run.get("error") and not run.get("traced")


def rep_ratios(
    runs: Sequence[Mapping[str, Any]], reference: str = REFERENCE
) -> list[dict[str, Any]]:
    """Per scenario and peer: the reference system's figure over the peer's in every
    repetition (the systems of one repetition run one after the other, so a disturbance
    falls on both or shows as an outlier), and its server CPU per message over the
    peer's. The median leaves out repetitions in which either run was disturbed (unless
    all were); the range (min and max) is over all of them."""
    cells = {(r["system"], r["scenario"], r["rep"]): r for r in runs if counted(r)}
    scenarios = list(dict.fromkeys(r["scenario"] for r in runs))
    systems = list(dict.fromkeys(r["system"] for r in runs))
    out = []
    for scenario in scenarios:
        for peer in systems:
            if peer == reference:
                continue
            reps = []
            for rep in sorted({r["rep"] for r in runs if r["scenario"] == scenario}):
                mine = cells.get((reference, scenario, rep))
                theirs = cells.get((peer, scenario, rep))
                if not mine or not theirs or not theirs["value"]:
                    continue
                item: dict[str, Any] = {
                    "rep": rep,
                    "ratio": mine["value"] / theirs["value"],
                    "disturbed": bool(mine.get("disturbed") or theirs.get("disturbed")),
                }
                if mine.get("per_cpu") and theirs.get("per_cpu"):
                    # Server CPU per message, reference over peer: below 1 is cheaper.
                    item["cpu_ratio"] = theirs["per_cpu"] / mine["per_cpu"]
                reps.append(item)
            if reps:
                out.append({"scenario": scenario, "peer": peer, **summarize_ratios(reps)})
    return out


def summarize_ratios(reps: list[dict[str, Any]]) -> dict[str, Any]:
    calm = [r for r in reps if not r["disturbed"]] or reps
    out: dict[str, Any] = {"reps": reps}
    for key in ("ratio", "cpu_ratio"):
        every = [r[key] for r in reps if key in r]
        used = [r[key] for r in calm if key in r]
        if every:
            out[key] = {
                "median": harness.median(used or every),
                "min": min(every),
                "max": max(every),
            }
    out["disturbed_reps"] = [r["rep"] for r in reps if r["disturbed"]]
    return out
