"""``python -m examples.notifications``: serve the notifications example."""

from __future__ import annotations

from examples._run import run

from .app import server

if __name__ == "__main__":
    run(server, "Notifications", ["/notifications?token=alice-token"])
