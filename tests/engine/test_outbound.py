"""The outbound flow alone, over a transport in memory: where a frame goes (written now,
held for the coalescer, queued), whether it fits, and what the slow-consumer policy does."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from tests.engine._fake import FakeNonBlockingTransport, FakeTransport
from trio_wsroutes._engine.closing import CloseEvent
from trio_wsroutes._engine.outbound import COALESCE_BYTES, Outbound
from trio_wsroutes._flow import MemoryBudget
from trio_wsroutes._frames import Frame
from trio_wsroutes._stats import ServerStats
from trio_wsroutes._transports import FrameTransport, NonBlockingWriter, Transport


def frame(size: int) -> Frame:
    return Frame(b"x" * size)


class Evicting(Outbound):
    """An outbound layer that records evictions (the connection's layer leaves its
    topics and the registry there)."""

    evicted: bool | None = None

    def _overflow(self, *, flush: bool) -> None:
        type(self).evicted = flush
        super()._overflow(flush=flush)


def outbound(
    transport: FakeTransport,
    *,
    limit: int = 1000,
    budget: MemoryBudget | None = None,
    stats: ServerStats | None = None,
    policy: Any = "close",
) -> Outbound:
    as_transport: Transport = transport  # the fake implements the whole interface
    return Outbound(
        as_transport,
        limit=limit,
        budget=budget or MemoryBudget(),
        stats=stats or ServerStats(),
        policy=policy,
    )


async def test_a_publish_is_held_until_the_publisher_yields_then_written_in_one_call() -> None:
    transport = FakeNonBlockingTransport()
    out = outbound(transport)
    for _ in range(3):
        assert out.deliver(frame(10))
    assert transport.written == []  # held
    assert out.buffered_amount == 30
    await trio.testing.wait_all_tasks_blocked()  # the publisher yields: the coalescer runs
    assert [f.size for f in transport.written] == [10, 10, 10]
    assert transport.writes == 1
    assert out.buffered_amount == 0


async def test_held_frames_are_written_at_once_past_the_coalescing_bound() -> None:
    transport = FakeNonBlockingTransport()
    out = outbound(transport, limit=10 * COALESCE_BYTES)
    out.deliver(frame(COALESCE_BYTES // 2))
    out.deliver(frame(COALESCE_BYTES // 2))
    assert transport.writes == 1
    await trio.lowlevel.checkpoint()


async def test_a_transport_that_cannot_write_without_waiting_gets_frames_queued() -> None:
    transport = FakeTransport()
    out = outbound(transport)
    out.deliver(frame(100))
    assert transport.written == []
    assert out.buffered_amount == 100
    async with trio.open_nursery() as nursery:
        nursery.start_soon(out._write)
        await trio.testing.wait_all_tasks_blocked()
        assert [f.size for f in transport.written] == [100]
        nursery.cancel_scope.cancel()


def test_a_frame_fits_an_empty_queue_whatever_its_size() -> None:
    out = outbound(FakeTransport(), limit=100)
    assert not out._over_limit(10_000)


async def test_over_the_limit_the_close_policy_evicts_and_the_drop_policy_drops() -> None:
    for policy in ("close", "drop"):
        stats = ServerStats()
        out = Evicting(
            FakeTransport(), limit=250, budget=MemoryBudget(), policy=policy, stats=stats
        )  # type: ignore[arg-type]
        Evicting.evicted = None
        assert out.deliver(frame(100))
        assert out.deliver(frame(100))
        taken = out.deliver(frame(100))  # 300 > 250
        if policy == "close":
            assert not taken
            assert Evicting.evicted is False  # at once, what is queued dropped
            assert stats.slow_consumer_closes == 1
            assert out.close_code == 1013
            assert out.buffered_amount == 0
        else:
            assert taken
            assert out.dropped_messages == stats.messages_dropped == 1
            assert out.buffered_amount == 200


def test_a_recovery_is_never_dropped_and_closes_after_what_fitted() -> None:
    out = Evicting(
        FakeTransport(), limit=150, budget=MemoryBudget(), policy="drop", stats=ServerStats()
    )
    out._recovering = True
    assert out.deliver(frame(100))
    assert not out.deliver(frame(100))
    assert Evicting.evicted is True  # after what is queued
    assert out.buffered_amount == 100
    assert out._recovered_bytes == 200


def test_the_servers_budget_makes_a_connection_that_is_behind_overflow() -> None:
    budget = MemoryBudget(150)
    out = outbound(FakeTransport(), limit=10_000, budget=budget)
    other = outbound(FakeTransport(), limit=10_000, budget=budget)
    assert other.deliver(frame(200))  # the budget is now exceeded
    assert out.deliver(frame(10))  # nothing queued here: it fits
    assert not out.deliver(frame(10))  # behind, and the server is over budget


async def test_send_waits_for_a_frame_that_would_pass_the_limit() -> None:
    transport = FakeTransport()
    transport.block()
    out = outbound(transport, limit=250)
    sent: list[int] = []

    async def sender() -> None:
        for n in range(4):
            await out._send_frame(frame(100))
            sent.append(n)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(out._write)
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        # One frame in the transport, one queued: a third would pass 250.
        assert sent == [0, 1]
        assert out.buffered_amount == 200
        transport.unblock()
        await trio.testing.wait_all_tasks_blocked()
        assert sent == [0, 1, 2, 3]
        nursery.cancel_scope.cancel()


async def test_a_frame_is_counted_once_in_the_budget_however_many_queue_it() -> None:
    budget = MemoryBudget()
    shared = frame(1000)
    outs = [outbound(FakeTransport(), limit=10_000, budget=budget) for _ in range(5)]
    for out in outs:
        out._enqueue(shared)
    assert budget.used == 1000
    for out in outs:
        out._drop_outbound()
    assert budget.used == 0
    await trio.lowlevel.checkpoint()


async def test_an_urgent_close_drops_what_is_queued_and_the_close_goes_out_next() -> None:
    transport = FakeTransport()
    transport.block()
    out = outbound(transport)
    out._enqueue(frame(10))
    out._enqueue(frame(20))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(out._write)
        await trio.testing.wait_all_tasks_blocked()  # the first frame is being sent
        out._advance(CloseEvent.CLOSE_NOW, 1013, "slow consumer")
        await trio.testing.wait_all_tasks_blocked()
        assert transport.written == []  # neither the interrupted frame nor the queued one
        assert transport.closed_with == (1013, "slow consumer")


def test_the_fakes_implement_what_they_say() -> None:
    assert isinstance(FakeTransport(), FrameTransport)
    assert not isinstance(FakeTransport(), NonBlockingWriter)
    assert isinstance(FakeNonBlockingTransport(), NonBlockingWriter)
