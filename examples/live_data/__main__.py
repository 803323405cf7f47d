"""``python -m examples.live_data``: serve the live data example."""

from __future__ import annotations

from examples._run import run

from .app import server

if __name__ == "__main__":
    run(server, "Live data", ["/live"])
