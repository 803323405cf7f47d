"""System calls per echoed message of a bare Trio echo server, beside a bare asyncio one:

    python bench/trio_epoll.py [--messages 20000]

Each server is a dozen lines on raw sockets (no WebSocket, no framework), so what it
counts is the event loop's own cost per request/response round: ``strace -c`` attached to
the server for exactly the measured messages, one client sending 100-byte messages one at
a time over 127.0.0.1. Trio's epoll backend registers each socket with ``EPOLLONESHOT``
and re-arms it with ``epoll_ctl`` on every wait, so a request/response loop makes one
``epoll_ctl`` per message on top of the ``recv`` and ``send`` (and the ``epoll_wait``) that
any loop makes; asyncio's selector keeps the registration and makes none. The
benchmarks page discusses the figures and the change to Trio that would remove it.
127.0.0.1 only; bounded by ``--messages``; needs ``perf`` (Debian's ``linux-perf``) and
access to the tracepoints (root, or ``kernel.perf_event_paranoid`` <= -1).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRIO_SERVER = """
import socket, sys, trio
async def serve(sock):
    with sock:
        while data := await sock.recv(65536):
            await sock.send(data)
async def main():
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    print(listener.getsockname()[1], flush=True)
    async with trio.open_nursery() as nursery:
        while True:
            sock, _ = await listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(serve, sock)
trio.run(main)
"""

ASYNCIO_SERVER = """
import asyncio, socket
async def serve(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""

MESSAGE = b"x" * 100


def _round_trips(port: int, count: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            sock.sendall(MESSAGE)
            got = 0
            while got < len(MESSAGE):
                got += len(sock.recv(65536))


SYSCALLS = ("recvfrom", "read", "sendto", "write", "epoll_ctl", "epoll_wait", "epoll_pwait")


def _syscalls(report: str) -> dict[str, int]:
    """``perf stat``'s counts: calls per system call."""
    calls: dict[str, int] = {}
    for match in re.finditer(r"^\s*([\d,]+)\s+syscalls:sys_enter_(\w+)", report, re.M):
        calls[match.group(2)] = int(match.group(1).replace(",", ""))
    return calls


def measure(source: str, messages: int) -> dict[str, float]:
    """System calls per message of the server ``source``."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "server.py"
        script.write_text(source)
        server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            _round_trips(port, 200)  # warm up outside the count
            out = Path(tmp) / "perf.txt"
            events = ",".join(f"syscalls:sys_enter_{name}" for name in SYSCALLS)
            tracer = subprocess.Popen(
                ["perf", "stat", "-e", events, "-p", str(server.pid), "-o", str(out)],
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # attached
            _round_trips(port, messages)
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
            calls = _syscalls(out.read_text())
        finally:
            server.kill()
            server.wait()
    return {name: round(count / messages, 2) for name, count in sorted(calls.items()) if count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    if shutil.which("perf") is None:
        sys.exit("trio_epoll.py needs perf (apt-get install linux-perf)")
    result = {
        "trio": measure(TRIO_SERVER, args.messages),
        "asyncio": measure(ASYNCIO_SERVER, args.messages),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
