"""Stopping a server as users do: Ctrl+C (SIGINT to the process group, as a terminal
sends it) and SIGTERM, on real server processes. Every client gets a 1001 close, the
process exits 0 within the grace period, and nothing is printed as a traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
GRACE = 5.0  # the server's default close_timeout
TIMEOUT = 15

COMMANDS = {
    "serve": [sys.executable, "-m", "trio_wsroutes._cli", "serve", "tests.lifecycle_app:server"],
    "serve-native": [
        sys.executable,
        *("-m", "trio_wsroutes._cli", "serve", "tests.lifecycle_app:server", "--native"),
    ],
    "example-chat": [sys.executable, "-m", "examples.chat"],
    "hypercorn-cli": [
        sys.executable,
        *("-m", "hypercorn", "--worker-class", "trio", "tests.lifecycle_app:server"),
    ],
}
PATHS = {"example-chat": "/chat/lobby"}


async def _address(process: trio.Process, output: list[str]) -> str:
    """The port the server bound, from what it prints."""
    assert process.stdout is not None and process.stderr is not None
    pattern = re.compile(r"(?:ws|http)://127\.0\.0\.1:(\d+)")
    found = trio.Event()
    port: list[str] = []

    async def read(stream: trio.abc.ReceiveStream) -> None:
        buffer = b""
        while True:
            chunk = await stream.receive_some()
            if not chunk:
                return
            buffer += chunk
            text = buffer.decode(errors="replace")
            output.append(chunk.decode(errors="replace"))
            match = pattern.search(text)
            if match and not found.is_set():
                port.append(match.group(1))
                found.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read, process.stdout)
        nursery.start_soon(read, process.stderr)
        with trio.fail_after(TIMEOUT):
            await found.wait()
        nursery.cancel_scope.cancel()
    return port[0]


async def _close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes; its close code (``None`` without a close frame)."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", list(COMMANDS))
async def test_a_signal_closes_every_client_with_1001_and_exits_cleanly(
    command: str, how: str
) -> None:
    argv = [*COMMANDS[command], "--port" if command != "hypercorn-cli" else "--bind"]
    argv.append("0" if command != "hypercorn-cli" else "127.0.0.1:0")
    process = await trio.lowlevel.open_process(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, like a terminal's job
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output: list[str] = []
    try:
        port = await _address(process, output)
        url = f"ws://127.0.0.1:{port}{PATHS.get(command, '/ws')}?name=t"
        codes: list[int | None] = []
        connected = trio.Semaphore(0)

        async def client() -> None:
            async with connect(url, open_timeout=TIMEOUT, ping_interval=None) as ws:
                await ws.recv()  # greeted: the connection is up
                connected.release()
                codes.append(await _close_code(ws))

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client)
                nursery.start_soon(client)
                await connected.acquire()
                await connected.acquire()
                # As a terminal (Ctrl+C) or a process manager (systemd) signals: the group.
                os.killpg(process.pid, signal.Signals[how])
                signalled = trio.current_time()
        with trio.fail_after(GRACE + 2):
            returncode = await process.wait()
        assert codes == [1001, 1001]
        assert returncode == 0
        assert trio.current_time() - signalled < GRACE
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    rest = await process.stderr.receive_some() if process.stderr else b""
    printed = "".join(output) + rest.decode(errors="replace")
    assert "Traceback" not in printed
