"""Flow control: a connection's queues and rate limiter's bucket, the server's memory
budget, and the write coalescer that publishes share.

All are plain data structures with no I/O; the engine (``_connection.py``) owns them.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from typing import Final, Generic, Protocol, TypeVar

import trio

from ._frames import Frame
from ._spec import RateLimit

__all__ = [
    "DEFAULT_RECOVERY_RATE",
    "Coalescer",
    "CoalescingHolder",
    "Inbox",
    "MemoryBudget",
    "Outbox",
    "RecoveryLimiter",
    "TokenBucket",
    "current_coalescer",
]

logger = logging.getLogger("trio_wsroutes")

_Marker = TypeVar("_Marker")
_Item = TypeVar("_Item")


class _HeadQueue(Generic[_Item]):
    """A FIFO as a list and a head index: lighter than a deque for the short queues of
    a connection, which every idle connection has. Taken items are set to ``None`` and
    the list is compacted once half of it has been taken."""

    __slots__ = ("_head", "_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[_Item | None] = []
        self._head = 0
        # The one consumer, while it waits for an item. A task rather than a parking
        # lot: each message wakes it, and a lot costs a fifth more per switch (and its
        # own objects on every idle connection).
        self._waiter: trio.lowlevel.Task | None = None

    def __len__(self) -> int:
        return len(self._items) - self._head

    def _take_first(self) -> _Item:
        items = self._items
        head = self._head
        item = items[head]
        assert item is not None
        items[head] = None
        head += 1
        if head == len(items):
            items.clear()
            head = 0
        elif head > 32 and head * 2 > len(items):
            del items[:head]
            head = 0
        self._head = head
        return item

    def _drop_all(self) -> None:
        self._items.clear()
        self._head = 0

    def _wake(self) -> None:
        """Wake the consumer if it waits."""
        task = self._waiter
        if task is not None:
            self._waiter = None
            trio.lowlevel.reschedule(task)

    async def _wait(self) -> None:
        """Wait until :meth:`_wake` (one consumer only; cancellable)."""
        assert self._waiter is None, "one consumer only"
        self._waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort_wait)

    def _abort_wait(self, _: object) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED


class Inbox(_HeadQueue[_Item]):
    """The queue from a connection's reader to its dispatcher, in arrival order.

    The engine bounds it (in messages and bytes) and has the reader wait for room; the
    dispatcher is its only consumer. Lighter than a memory channel, which matters on
    every message and on every idle connection.
    """

    __slots__ = ("closed",)

    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        """Set by the reader when it stops: the dispatcher ends once the queue is empty."""

    def put(self, item: _Item) -> None:
        """Queue ``item`` at the end."""
        self._items.append(item)
        if self._waiter is not None:
            self._wake()

    async def get(self) -> _Item | None:
        """The next item (waiting for one), or ``None`` once closed and empty."""
        items = self._items
        while self._head == len(items):
            if self.closed:
                return None
            await self._wait()
        return self._take_first()

    def close(self) -> None:
        """No more items will come."""
        self.closed = True
        self._wake()


class MemoryBudget:
    """The bytes a server holds for all its connections (inbound queues, outboxes,
    subscriptions) and for the history its broker keeps in memory, against a limit: over
    it, the engine holds back (see ``_connection``). ``limit`` ``None`` counts without
    limiting.

    A frame is counted once however many outboxes (and histories) hold it: a publish to
    ten thousand subscribers holds its bytes once, not ten thousand times.
    """

    __slots__ = ("_space", "limit", "used")

    def __init__(self, limit: int | None = None) -> None:
        self.limit: float = math.inf if limit is None else limit
        """The budget in bytes (infinite without one)."""
        self.used: int = 0
        """Bytes held now."""
        self._space = trio.lowlevel.ParkingLot()

    @property
    def exceeded(self) -> bool:
        """Whether more than ``limit`` bytes are held."""
        return self.used > self.limit

    def take(self, size: int) -> None:
        """Count ``size`` more bytes held."""
        self.used += size

    def release(self, size: int) -> None:
        """Count ``size`` bytes given back; wake those waiting once under the limit."""
        self.used -= size
        if self._space and self.used <= self.limit:
            self._space.unpark_all()

    def hold(self, frame: Frame) -> None:
        """One more queue holds ``frame``: its bytes count from the first holder on."""
        if not frame.holders:
            self.used += frame.size
        frame.holders += 1

    def let_go(self, frame: Frame) -> None:
        """One queue less holds ``frame``: its bytes are given back with the last."""
        frame.holders -= 1
        if not frame.holders:
            self.release(frame.size)

    async def wait(self) -> None:
        """Wait until the budget is back under its limit (callers check again)."""
        await self._space.park()


class Outbox(_HeadQueue["Frame | _Marker"]):
    """A FIFO of frames and markers, bounded in bytes by the engine; the writer task is
    its only consumer.

    ``size`` counts the payload bytes of the frames queued (markers count nothing). The
    limit itself is checked by the engine against ``size`` plus what the transport still
    holds, so that one number bounds every byte waiting for the peer. A list and a head
    index rather than a deque, and a parking lot for senders made only when one waits:
    every idle connection has an outbox.
    """

    __slots__ = ("_budget", "_has_space", "size")

    def __init__(self, budget: MemoryBudget) -> None:
        super().__init__()
        self.size = 0
        self._budget = budget
        self._has_space: trio.lowlevel.ParkingLot | None = None

    def put_nowait(self, item: Frame | _Marker) -> None:
        """Queue ``item`` at the end."""
        self._items.append(item)
        if type(item) is Frame:
            self.size += item.size
            if not item.holders:  # MemoryBudget.hold, inlined: once per message
                self._budget.used += item.size
            item.holders += 1
        if self._waiter is not None:
            self._wake()

    async def get(self) -> Frame | _Marker:
        """The next item, waiting for one."""
        items = self._items
        while self._head == len(items):
            await self._wait()
        item = self._take_first()
        if type(item) is Frame:
            self.size -= item.size
            self._budget.let_go(item)
        return item

    async def wait_for_space(self) -> None:
        """Wait until :meth:`wake_senders` is called (the engine re-checks its limit)."""
        if self._has_space is None:
            self._has_space = trio.lowlevel.ParkingLot()
        await self._has_space.park()

    @property
    def senders_waiting(self) -> bool:
        """Whether a sender waits for space."""
        return bool(self._has_space)

    def wake_senders(self) -> None:
        """Let every waiting sender re-check the limit."""
        if self._has_space:
            self._has_space.unpark_all()

    def clear(self) -> None:
        """Drop everything queued (an urgent close), and wake waiting senders."""
        budget = self._budget
        for item in self._items[self._head :]:
            if type(item) is Frame:
                budget.let_go(item)
        self._drop_all()
        self.size = 0
        self.wake_senders()


class TokenBucket:
    """A token bucket: ``rate`` tokens a second, at most ``capacity`` saved up."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float) -> None:
        self.capacity = float(capacity)
        self.rate = float(rate)
        self.tokens = float(capacity)
        self.stamp = trio.current_time()

    def _refill(self) -> None:
        now = trio.current_time()
        # Trio's clock starts anywhere in each run: a server used by a second run (one
        # test after another) must not see time go backwards and drain its buckets.
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.stamp = now

    def take(self, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if they are there."""
        self._refill()
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def spend(self, cost: float) -> bool:
        """Spend ``cost`` unless the allowance is used up; it may go into debt, so a
        message bigger than the bucket passes when the bucket is full."""
        self._refill()
        if self.tokens > 0:
            self.tokens -= cost
            return True
        return False


DEFAULT_RECOVERY_RATE: Final = RateLimit(2000, burst=4000, bytes_per_second=8 * 1024 * 1024)
"""What recoveries may send to one client address by default: 2000 publications a second
(4000 at once) and 8 MiB a second."""
_MAX_ADDRESSES: Final = 10_000
"""Client addresses whose recovery allowance is remembered; the least recently seen is
forgotten first (it starts again with a full allowance)."""


class RecoveryLimiter:
    """What recoveries may send to each client address: a token bucket of publications
    and one of bytes per address (the server's ``recovery_rate``).

    A recovery asks :meth:`allows` first and, once done, is charged what it sent with
    :meth:`charge`; the buckets may go into debt (a recovery is never cut short), so a
    client that reconnects and recovers in a loop gets ``recovered=False`` until its
    allowance has refilled."""

    __slots__ = ("_buckets", "rate")

    def __init__(self, rate: RateLimit | None) -> None:
        self.rate: RateLimit | None = rate
        self._buckets: OrderedDict[str, tuple[TokenBucket, TokenBucket | None]] = OrderedDict()

    def allows(self, address: str) -> bool:
        """Whether a recovery for ``address`` may start now."""
        if self.rate is None:
            return True
        buckets = self._buckets.get(address)
        if buckets is None:
            return True
        self._buckets.move_to_end(address)
        publications, size = buckets
        return publications.spend(0) and (size is None or size.spend(0))

    def charge(self, address: str, publications: int, size: int) -> None:
        """Count a recovery for ``address`` that sent ``publications`` of ``size`` bytes."""
        rate = self.rate
        if rate is None or not publications:
            return
        buckets = self._buckets.get(address)
        if buckets is None:
            while len(self._buckets) >= _MAX_ADDRESSES:
                self._buckets.popitem(last=False)
            byte_rate = rate.bytes_per_second
            buckets = self._buckets[address] = (
                TokenBucket(rate.messages_per_second, rate.capacity),
                None if byte_rate is None else TokenBucket(byte_rate, byte_rate),
            )
        else:
            self._buckets.move_to_end(address)
        publication_bucket, byte_bucket = buckets
        publication_bucket.spend(publications)
        if byte_bucket is not None:
            byte_bucket.spend(size)


class CoalescingHolder(Protocol):
    """What registers with a :class:`Coalescer`: a connection holding published frames."""

    def _release_coalesced(self) -> None:
        """Write (or queue) what is held."""


class Coalescer:
    """Writes held until the task that made them yields, then released together.

    A publish to many connections costs a system call per connection; publishes made
    back to back (a dispatcher working through several queued messages, a loop of
    ``server.publish``) would each pay it again. Instead, a connection that takes a
    published frame with nothing queued holds it and registers here; more frames for it
    join the held ones; once the publishing task yields, this one task (a Trio system
    task, one per run) releases every holder, and each connection writes all it holds
    in one call. The delay is bounded by how long a task runs without yielding, which
    Trio code keeps short anyway.
    """

    __slots__ = ("_holders", "_lot")

    def __init__(self) -> None:
        self._holders: list[CoalescingHolder] = []
        self._lot = trio.lowlevel.ParkingLot()

    def add(self, holder: CoalescingHolder) -> None:
        """Call ``holder._release_coalesced()`` once the current task yields (once per
        registration). The holder itself is kept, not a bound method: nothing is
        allocated per delivery that outlives the publish, which would otherwise fill
        the garbage collector's older generations at every large fan-out and make its
        full collections (tens of milliseconds with thousands of connections) frequent."""
        if not self._holders:
            self._lot.unpark()
        self._holders.append(holder)

    async def run(self) -> None:
        """Release the holders as they come (runs for the rest of the Trio run)."""
        while True:
            while not self._holders:
                await self._lot.park()
            holders, self._holders = self._holders, []
            for holder in holders:
                try:
                    # Private to the connection: only the coalescer calls it.
                    holder._release_coalesced()  # pyright: ignore[reportPrivateUsage]
                except Exception:  # a bug must not take the whole run down
                    logger.exception("releasing coalesced writes failed")


_COALESCER: trio.lowlevel.RunVar[Coalescer] = trio.lowlevel.RunVar("trio_wsroutes.coalescer")


def current_coalescer() -> Coalescer:
    """This Trio run's :class:`Coalescer` (started on first use)."""
    try:
        return _COALESCER.get()
    except LookupError:
        coalescer = Coalescer()
        _COALESCER.set(coalescer)
        trio.lowlevel.spawn_system_task(coalescer.run, name="trio_wsroutes write coalescer")
        return coalescer
