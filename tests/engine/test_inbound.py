"""The inbound flow alone: what each incoming item becomes, and the timers."""

from __future__ import annotations

from typing import Any

import trio

from tests.engine._fake import FakeTransport
from tests.engine._spec import spec_of
from trio_wsroutes import CloseCode, Connection, Context, RateLimit, create_websocket_route
from trio_wsroutes._engine.inbound import Inbound, RateLimited, Timers
from trio_wsroutes._engine.outbound import Closing
from trio_wsroutes._flow import Inbox, MemoryBudget
from trio_wsroutes._spec import Heartbeat
from trio_wsroutes._stats import ServerStats
from trio_wsroutes._transports import Violation


def reader(
    *, binary: bool = False, transport: FakeTransport | None = None, **spec_options: Any
) -> Inbound:
    route = create_websocket_route("/r")
    if binary:

        @route.on_binary
        async def on_binary(ws: Connection[Any], data: bytes, ctx: Context[None]) -> None:
            pass

    spec = spec_of(route, **spec_options)
    return Inbound(transport or FakeTransport(), spec, budget=MemoryBudget(), stats=ServerStats())


async def test_messages_within_the_limits_pass_as_they_are() -> None:
    r = reader(binary=True)
    assert r._classify('{"type":"x"}') == '{"type":"x"}'
    assert r._classify(b"\x00\x01") == b"\x00\x01"


async def test_too_big_binary_on_a_text_route_and_violations_close() -> None:
    r = reader(max_payload_length=10)
    big = r._classify("é" * 10)  # 20 bytes of UTF-8
    assert isinstance(big, Closing) and big.code == CloseCode.MESSAGE_TOO_BIG
    assert r._classify("é" * 5) == "é" * 5  # exactly 10 bytes
    binary = r._classify(b"x")
    assert isinstance(binary, Closing) and binary.code == CloseCode.UNSUPPORTED_DATA
    violation = r._classify(Violation(1009, "message too big"))
    assert isinstance(violation, Closing) and violation.code == 1009


async def test_over_the_rate_limit_a_message_is_refused_in_order_with_its_id() -> None:
    r = reader(rate_limit=RateLimit(1, burst=2))
    assert r._classify('{"type":"a","id":1}') == '{"type":"a","id":1}'
    assert r._classify('{"type":"a","id":2}') == '{"type":"a","id":2}'
    refused = r._classify('{"type":"a","id":3}')
    assert isinstance(refused, RateLimited) and refused.id == 3
    closing = reader(rate_limit=RateLimit(1, burst=1, action="close"))
    closing._classify("a")
    refusal = closing._classify("b")
    assert isinstance(refusal, Closing) and refusal.code == CloseCode.POLICY_VIOLATION


def test_the_heartbeat_pings_after_the_interval_and_gives_up_after_the_timeout() -> None:
    timers = Timers(Heartbeat(interval=10, timeout=5), None, now=0.0)
    assert timers.deadline(0.0, received=0.0, sent=0) == 10.0
    assert timers.heartbeat_due(9.0, 0.0, blocked=False) is False
    assert timers.heartbeat_due(10.0, 0.0, blocked=False) is True  # ping now
    assert timers.deadline(10.0, received=0.0, sent=0) == 15.0  # answer due by then
    assert timers.heartbeat_due(15.0, 0.0, blocked=False) is None  # no answer: close


def test_any_frame_answers_the_heartbeat_and_a_blocked_reader_is_not_blamed() -> None:
    timers = Timers(Heartbeat(interval=10, timeout=5), None, now=0.0)
    timers.heartbeat_due(10.0, 0.0, blocked=False)
    assert timers.heartbeat_due(12.0, received=11.0, blocked=False) is False
    assert timers.ping_sent is None
    blocked = Timers(Heartbeat(interval=10, timeout=5), None, now=0.0)
    blocked.heartbeat_due(10.0, 0.0, blocked=False)
    assert blocked.heartbeat_due(20.0, 0.0, blocked=True) is True  # pinged again, not closed


def test_the_idle_timer_counts_traffic_both_ways() -> None:
    timers = Timers(None, 30.0, now=0.0)
    assert not timers.idle_due(29.0, received=0.0, sent=0)
    assert timers.idle_due(30.0, received=0.0, sent=0)
    # A message sent is noticed when the timer looks: it restarts the idle period.
    assert not timers.idle_due(31.0, received=0.0, sent=1)
    assert timers.deadline(31.0, received=0.0, sent=1) == 61.0
    assert Timers(None, None, now=0.0).deadline(0.0, received=0.0, sent=0) == float("inf")


async def test_the_reader_queues_messages_and_reports_a_peer_that_left() -> None:
    from trio_wsroutes._transports import Disconnect

    transport = FakeTransport()
    r = reader(transport=transport)
    inbox: Inbox[Any] = Inbox()
    await transport.feed("one")
    await transport.feed("two")
    await transport.feed(Disconnect(1001, "going"))
    with trio.fail_after(5):
        await r._read(inbox)
    assert [await inbox.get(), await inbox.get(), await inbox.get()] == ["one", "two", None]
    assert (r.closed, r.close_code) == (True, 1001)  # the peer left: no close frame owed
    budget = r._budget
    assert r._held > 0 and budget.used == r._held  # held until the dispatcher takes them
    r._release_inbox()
    assert budget.used == 0
