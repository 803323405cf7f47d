"""``python -m examples.http_and_ws``: the URL it prints serves a page.

The example prints where it runs; a reader opens that URL first, so it must not be a 404.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
PRINTED_URL = re.compile(rb"example running on (http://\S+)\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_the_printed_url_serves_the_example_page() -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "examples.http_and_ws", "--port", str(free_port())],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = bytearray()
    try:
        assert process.stdout is not None
        with trio.fail_after(15):
            while (found := PRINTED_URL.search(output)) is None:
                chunk = await process.stdout.receive_some()
                assert chunk, f"the example exited early: {output.decode(errors='replace')}"
                output += chunk
            url = found[1].decode()
            page = await trio.to_thread.run_sync(lambda: httpx.get(url, timeout=10))
        assert page.status_code == 200, url
        assert page.headers["content-type"].startswith("text/html")
        # The page tries both sides of the shared token check.
        assert 'fetch("/api/me")' in page.text
        assert 'new URL("/ws/updates", location.href)' in page.text
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
