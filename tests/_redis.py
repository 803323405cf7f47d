"""A real ``redis-server`` for tests: one per test, on a free 127.0.0.1 port, no persistence
(or, asked for, an append-only file synced at every write).

The fixtures ``redis`` (started) and ``stopped_redis`` (the test starts it) are defined
here, once, and offered to every test by ``tests/conftest.py``.

Missing ``redis-server`` (or ``coredis``) skips the Redis tests on a developer machine with
the reason, and fails them when ``CI=true``: CI must run them (``.ci/run`` installs it).
The rule is ``tests/_tools.py``'s, shared with the browser and TypeScript tests.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._tools import missing_tool

STARTUP_TIMEOUT = 10.0


def require_coredis() -> None:
    """Skip (fail in CI) when ``coredis`` is not installed."""
    if importlib.util.find_spec("coredis") is None:
        missing_tool("coredis is not installed (pip install -e '.[test]' brings it)")


def require_redis() -> str:
    """The ``redis-server`` executable, or skip (fail in CI) with the reason."""
    require_coredis()
    executable = shutil.which("redis-server")
    if executable is None:
        missing_tool("redis-server is not installed (apt-get install redis-server)")
    return executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """``redis-server --port N --bind 127.0.0.1 --save '' --appendonly no``, by PID.

    With ``persistent=True``: ``--appendonly yes --appendfsync always`` in ``log_dir``,
    so that what Redis acknowledged survives a SIGKILL and a restart."""

    def __init__(self, executable: str, log_dir: Path, *, persistent: bool = False) -> None:
        self.executable = executable
        self.persistent = persistent
        self.data_dir = log_dir
        self.port = free_port()
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait (bounded) until it accepts connections."""
        assert self.process is None, "already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.executable,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    *(
                        ["--appendonly", "yes", "--appendfsync", "always"]
                        if self.persistent
                        else ["--appendonly", "no"]
                    ),
                    "--dir",
                    str(self.data_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not start: see {self.log_path}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL by PID and reap it."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
        if process is not None:
            process.wait(timeout=STARTUP_TIMEOUT)

    def command(self, *args: str) -> bytes:
        """Run one command with ``redis-cli``-free plain RESP; returns the raw reply."""
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"".join(parts))
            return sock.recv(65536)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A running ``redis-server``, killed after the test."""
    server = RedisServer(require_redis(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def stopped_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` that the test starts itself (and may restart)."""
    server = RedisServer(require_redis(), tmp_path)
    try:
        yield server
    finally:
        server.kill()
