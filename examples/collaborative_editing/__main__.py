"""``python -m examples.collaborative_editing``: serve the collaborative editing example."""

from __future__ import annotations

from examples._run import run

from .app import server

if __name__ == "__main__":
    run(server, "Collaborative editing", ["/document/<doc_id>?token=<name>"])
