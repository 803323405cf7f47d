"""Every example starts with its README command and answers over a real socket."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 15

# module, a WebSocket path that accepts a connection, an envelope to send (or None), and
# the wire type of the first message expected back.
EXAMPLES = [
    ("examples.chat", "/chat/lobby", None, "joined"),
    (
        "examples.notifications",
        "/notifications?token=alice-token",
        '{"type":"mark_read","data":{"id":"0"},"id":1}',
        "error",
    ),
    ("examples.live_data", "/live", '{"type":"subscribe"}', "tick"),
    ("examples.collaborative_editing", "/document/readme?token=ada", None, "init"),
    (
        "examples.binary_stream",
        "/stream/s/publish",
        '{"type":"start","data":{"content_type":"a/b"},"id":1}',
        "started",
    ),
    ("examples.http_and_ws", "/ws/updates", '{"type":"whoami","id":1}', "you_are"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("module", "path", "envelope", "first_type"), EXAMPLES, ids=[e[0] for e in EXAMPLES]
)
async def test_example_command_serves(
    module: str, path: str, envelope: str | None, first_type: str | None
) -> None:
    port = free_port()
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", module, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = bytearray()
    try:
        assert process.stdout is not None
        wanted = f"http://127.0.0.1:{port}".encode()
        with trio.fail_after(TIMEOUT):
            while wanted not in output:
                chunk = await process.stdout.receive_some()
                assert chunk, f"{module} exited early: {output.decode(errors='replace')}"
                output += chunk
            url = f"ws://127.0.0.1:{port}{path}"
            headers = [(b"authorization", b"Bearer alice-token")]
            async with open_websocket_url(url, extra_headers=headers) as ws:
                if envelope is not None:
                    await ws.send_message(envelope)
                if first_type is not None:
                    first = orjson.loads(await ws.get_message())
                    assert first["type"] == first_type
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
