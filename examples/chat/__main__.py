"""``python -m examples.chat [--host H] [--port P]``: serve the chat example."""

from __future__ import annotations

from examples._run import run

from .app import server

if __name__ == "__main__":
    run(server, "Chat", ["/chat/<room>"])
