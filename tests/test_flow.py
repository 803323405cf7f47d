"""The connection's queues: one consumer each, which waits with nothing but its task
recorded."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_wsroutes._flow import Inbox, MemoryBudget, Outbox
from trio_wsroutes._frames import Frame


async def test_the_inbox_wakes_its_consumer_on_put_and_on_close() -> None:
    inbox: Inbox[Any] = Inbox()
    got: list[Any] = []

    async def consume() -> None:
        while (item := await inbox.get()) is not None:
            got.append(item)
        got.append("closed")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        inbox.put("one")
        inbox.put("")  # an empty text message is a message
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["one", ""]
        inbox.close()
    assert got == ["one", "", "closed"]


async def test_a_cancelled_wait_leaves_the_queue_as_it_was() -> None:
    outbox: Outbox[Any] = Outbox(MemoryBudget())
    with trio.move_on_after(0.01):
        await outbox.get()
    frame = Frame(b"x")
    outbox.put_nowait(frame)  # nobody to wake: no error
    with trio.fail_after(5):
        assert await outbox.get() is frame
    assert outbox.size == 0


async def test_the_queues_have_one_consumer() -> None:
    inbox: Inbox[Any] = Inbox()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(inbox.get)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await inbox.get()
        inbox.close()
