"""Shared fixtures: a real server on an ephemeral port, under each transport.

``serve_live`` runs the server under hypercorn and under the native transport: every
test that takes it runs once per transport (the ``transport`` fixture). A test that only
one transport can pass names it with ``@pytest.mark.transports("hypercorn")``; one that
documents a limit of a transport marks it with ``xfail_on(transport, ...)``.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import trio

from tests._redis import redis as redis  # the one Redis fixture, for every test
from tests._redis import stopped_redis as stopped_redis
from tests._redis_cluster import redis_cluster as redis_cluster  # a module's cluster
from trio_wsroutes import BoundAddress, WebSocketServer
from trio_wsroutes.testing import TransportName

TRANSPORTS = ("hypercorn", "native")
MEMORY_TRANSPORTS = ("asgi", "native")

ServeLive = Callable[[WebSocketServer], AbstractAsyncContextManager[BoundAddress]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "transports(*names): run a serve_live test only under these transports"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "transport" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("transports")
        names = marker.args if marker is not None else TRANSPORTS
        metafunc.parametrize("transport", names)
    if "memory_transport" in metafunc.fixturenames:
        metafunc.parametrize("memory_transport", MEMORY_TRANSPORTS)


async def wait_until(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll ``predicate`` (state other tasks own) until it is true; fail after ``timeout``."""
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polls state owned by other tasks
            await trio.sleep(0.005)


@asynccontextmanager
async def live_server(
    server: WebSocketServer, transport: str = "hypercorn", port: int = 0
) -> AsyncIterator[BoundAddress]:
    """Serve ``server`` on 127.0.0.1:``port`` under hypercorn's trio worker or natively;
    on exit, stop it and wait until it has stopped (so the port is free again)."""
    stop = trio.Event()
    serve = server.serve if transport == "hypercorn" else server.serve_native
    async with trio.open_nursery() as nursery:

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            await serve("127.0.0.1", port, shutdown_trigger=stop.wait, task_status=task_status)

        addresses: list[BoundAddress] = await nursery.start(run)
        try:
            yield addresses[0]
        finally:
            stop.set()


@pytest.fixture
def transport(request: pytest.FixtureRequest) -> str:
    """``"hypercorn"`` or ``"native"`` (parametrized by ``pytest_generate_tests``)."""
    name: str = request.param
    return name


@pytest.fixture
def memory_transport(request: pytest.FixtureRequest) -> TransportName:
    """``"asgi"`` or ``"native"``: the transport an in-memory ``TestClient`` drives
    (parametrized by ``pytest_generate_tests``)."""
    name: TransportName = request.param
    return name


@pytest.fixture
def serve_live(transport: str) -> ServeLive:
    """``async with serve_live(server) as address:`` runs a real server (each transport)."""
    return functools.partial(live_server, transport=transport)


def xfail_on(request: pytest.FixtureRequest, transport: str, which: str, reason: str) -> None:
    """Mark the running test as a strict xfail when it runs under ``which``."""
    if transport == which:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
