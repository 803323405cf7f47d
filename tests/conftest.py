"""Shared fixtures: a real hypercorn on an ephemeral port, and the in-memory client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from trio_wsroutes import BoundAddress, WebSocketServer


@asynccontextmanager
async def live_server(server: WebSocketServer) -> AsyncIterator[BoundAddress]:
    """Serve ``server`` under a real hypercorn trio worker on 127.0.0.1:0."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            await server.serve("127.0.0.1", 0, shutdown_trigger=stop.wait, task_status=task_status)

        addresses: list[BoundAddress] = await nursery.start(run)
        try:
            yield addresses[0]
        finally:
            stop.set()


@pytest.fixture
def serve_live() -> Callable[[WebSocketServer], Any]:
    """``async with serve_live(server) as address:`` runs a real hypercorn."""
    return live_server
