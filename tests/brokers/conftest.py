"""The brokers under test: every test that takes ``open_broker`` runs once with a
:class:`~trio_wsroutes.MemoryBroker` and once with a :class:`~trio_wsroutes.RedisBroker`
on a real ``redis-server`` (the ``redis`` fixture of ``tests/_redis.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import trio

from tests._redis import RedisServer
from trio_wsroutes import History, HistoryPolicy, MemoryBroker, RedisBroker

AnyBroker = MemoryBroker | RedisBroker
OpenBroker = Callable[
    [HistoryPolicy | Mapping[str, History] | None], AbstractAsyncContextManager[AnyBroker]
]


@pytest.fixture(params=["memory", "redis"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    """``"memory"`` or ``"redis"``."""
    kind: str = request.param
    return kind


@pytest.fixture
def open_broker(broker_kind: str, request: pytest.FixtureRequest) -> OpenBroker:
    """``open_broker(history)``: a running broker of the kind under test, stopped on exit."""
    if broker_kind == "memory":

        @asynccontextmanager
        async def memory(
            history: HistoryPolicy | Mapping[str, History] | None,
        ) -> AsyncIterator[AnyBroker]:
            broker = MemoryBroker(history=history)
            async with trio.open_nursery() as nursery:
                await nursery.start(broker.run)
                yield broker
                nursery.cancel_scope.cancel()

        return memory
    server: RedisServer = request.getfixturevalue("redis")

    @asynccontextmanager
    async def on_redis(
        history: HistoryPolicy | Mapping[str, History] | None,
    ) -> AsyncIterator[AnyBroker]:
        broker = RedisBroker(server.url, history=history, reconnect_delay=0.05)
        async with broker:
            yield broker

    return on_redis
