"""Numbers shared by the processes of one deployment (hypercorn ``--workers``, or the
native transport's workers): each writes its snapshot to a file of a shared directory,
and a scrape of any of them adds them all up.

A file is written aside and renamed, so a reader sees a whole snapshot, old or new.
Counters and histograms of every process count (a worker that exited still did what it
did, as in ``prometheus-client``'s multiprocess mode); gauges only of the living ones (a
process that stops cleanly marks its file ``ended``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, cast

import orjson

from ._metrics import Snapshot

__all__ = [
    "SHARE_INTERVAL",
    "WORKERS_METRICS_DIR",
    "alive",
    "merge_snapshots",
    "read_snapshots",
    "write_snapshot",
]

SHARE_INTERVAL: Final = 1.0
"""Seconds between two writes of a process' numbers to the shared directory."""

WORKERS_METRICS_DIR: Final = "TRIO_WSROUTES_WORKERS_METRICS_DIR"
"""The environment variable through which the native workers' supervisor hands its
workers the directory it made for them (when nothing else names one)."""


def _snapshot_path(shared: Path, pid: int) -> Path:
    return shared / f"trio_wsroutes-{pid}.json"


def write_snapshot(shared: Path, snapshot: Snapshot, *, ended: bool = False) -> None:
    # Written aside, then renamed: a reader sees the old file or the new, never half.
    if ended:
        snapshot = {**snapshot, "ended": True}
    data = orjson.dumps(snapshot)
    fd, temporary = tempfile.mkstemp(dir=shared, prefix=".trio_wsroutes-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, _snapshot_path(shared, int(snapshot["pid"])))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read_snapshots(shared: Path) -> list[Snapshot]:
    snapshots: list[Snapshot] = []
    for path in shared.glob("trio_wsroutes-*.json"):
        try:
            snapshots.append(orjson.loads(path.read_bytes()))
        except (OSError, orjson.JSONDecodeError):
            continue  # gone meanwhile, or not ours
    return snapshots


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def merge_snapshots(snapshots: Iterable[Snapshot], live: Callable[[int], bool]) -> Snapshot:
    """Add up the snapshots of several processes: counters and histograms of every
    process (those of a process that ended still count), gauges of the ``live`` ones."""
    merged: dict[str, dict[str, Any]] = {}
    totals: dict[str, dict[tuple[str, ...], Any]] = {}
    for snapshot in snapshots:
        alive = not snapshot.get("ended") and live(int(snapshot.get("pid", 0)))
        for name, metric in snapshot.get("metrics", {}).items():
            if name not in merged:
                merged[name] = {k: v for k, v in metric.items() if k != "samples"}
                totals[name] = {}
            if metric["kind"] == "gauge" and not alive:
                continue
            table = totals[name]
            width = len(metric["labels"])
            for sample in metric["samples"]:
                key = tuple(sample[:width])
                value = sample[width]
                table[key] = _add(table.get(key), value)
    return {
        "pid": os.getpid(),
        "time": time.time(),
        "metrics": {
            name: {**meta, "samples": [[*key, value] for key, value in totals[name].items()]}
            for name, meta in merged.items()
        },
    }


def _add(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if isinstance(a, dict):
        first = cast("Mapping[str, Any]", a)
        second = cast("Mapping[str, Any]", b)
        mine: list[int] = first["counts"]
        theirs: list[int] = second["counts"]
        return {
            "bounds": first["bounds"],
            "counts": [x + y for x, y in zip(mine, theirs, strict=True)],
            "sum": first["sum"] + second["sum"],
        }
    return a + b
