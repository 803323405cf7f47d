"""pytest fixtures for testing routes (registered as a pytest plugin; needs pytest-trio).

Define a ``ws_server`` fixture returning your :class:`~trio_wsroutes.WebSocketServer`;
then:

* ``ws_client`` is an in-memory :class:`~trio_wsroutes.testing.TestClient` for it, and
  ``ws_live_server`` the :class:`~trio_wsroutes.BoundAddress` of a real hypercorn serving
  it on an ephemeral port of 127.0.0.1;
* ``ws_typed_client`` and ``ws_typed_live_client`` open typed clients
  (:class:`trio_wsroutes.client.Client`) to it, in memory and over a real socket: both
  are a :class:`~trio_wsroutes.testing.ClientFactory`, so a test moves from one to the
  other by changing its fixture.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import pytest
import trio

from ._server import BoundAddress, WebSocketServer
from .testing import ClientFactory, TestClient, live_clients


@pytest.fixture
async def ws_client(ws_server: WebSocketServer) -> AsyncIterator[TestClient]:
    """An in-memory client for your ``ws_server`` fixture, lifespan included."""
    async with TestClient(ws_server) as client:
        yield client


@pytest.fixture
async def ws_live_server(
    ws_server: WebSocketServer, nursery: trio.Nursery
) -> AsyncIterator[BoundAddress]:
    """Your ``ws_server`` under a real hypercorn trio worker on 127.0.0.1, ephemeral port."""
    stop = trio.Event()
    addresses: list[BoundAddress] = await nursery.start(
        functools.partial(ws_server.serve, "127.0.0.1", 0, shutdown_trigger=stop.wait)
    )
    yield addresses[0]
    stop.set()


@pytest.fixture
def ws_typed_client(ws_client: TestClient) -> ClientFactory:
    """Typed clients for your ``ws_server``, in memory: ``async with
    ws_typed_client(route, path) as client`` (the ``ws_client`` test client's
    :meth:`~trio_wsroutes.testing.TestClient.client`)."""
    return ws_client.client


@pytest.fixture
def ws_typed_live_client(ws_live_server: BoundAddress) -> ClientFactory:
    """Typed clients for your ``ws_server`` under a real hypercorn (``ws_live_server``):
    ``async with ws_typed_live_client(route, path) as client``, as with
    ``ws_typed_client``."""
    return live_clients(ws_live_server)
