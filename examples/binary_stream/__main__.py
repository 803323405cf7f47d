"""``python -m examples.binary_stream``: serve the binary stream example."""

from __future__ import annotations

from examples._run import run

from .app import server

if __name__ == "__main__":
    run(server, "Binary stream", ["/stream/<name>/publish", "/stream/<name>/listen"])
