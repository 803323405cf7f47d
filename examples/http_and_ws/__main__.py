"""``python -m examples.http_and_ws``: serve the HTTP + WebSocket example."""

from __future__ import annotations

from examples._run import run

from .app import server

if __name__ == "__main__":
    run(server, "HTTP and WebSocket", ["/ws/updates"])
