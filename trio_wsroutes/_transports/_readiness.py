"""Read readiness of the native transport's sockets, from one epoll set per Trio run.

Trio's epoll backend registers a file descriptor with ``EPOLLONESHOT`` and re-arms it
with ``epoll_ctl`` on every wait: on a request/response connection that is one system
call per message on top of its ``recv`` and ``send``. Here every socket is registered
once, edge-triggered, in a private epoll set; one task (the hub) waits in Trio for that
set itself, so Trio re-arms one file descriptor per batch of ready sockets instead of
one per message, and wakes the readers of the sockets that became readable.

Edge-triggered means an event comes for every arrival of data, not while data sits
unread, so a reader reads until the socket is empty (``EAGAIN``, or a short read) before
it waits; an event that comes while its reader is not waiting is kept as a flag, which
the next read clears. Linux only (``select.epoll``); elsewhere :func:`readiness_hub`
returns ``None`` and the sockets wait in Trio.
"""

from __future__ import annotations

import contextvars
import select
from typing import Final

import trio

__all__ = ["ReadinessHub", "Registration", "readiness_hub"]

_EVENTS: Final = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLRDHUP", 0)
_EVENTS_ET: Final = _EVENTS | getattr(select, "EPOLLET", 0)
_MAX_EVENTS: Final = 1024
_SUPPORTED = hasattr(select, "epoll") and bool(_EVENTS)


class Registration:
    """One socket in the hub's epoll set."""

    __slots__ = ("active", "fd", "hub", "ready", "task")

    def __init__(self, hub: ReadinessHub, fd: int) -> None:
        self.hub = hub
        self.fd = fd
        self.active = True
        """Still in the set: false once unregistered or the run ended."""
        self.ready = False
        """An event came while no task waited: the next wait returns at once."""
        self.task: trio.lowlevel.Task | None = None


class ReadinessHub:
    """The epoll set of one Trio run and the task that waits for it."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._registered: dict[int, Registration] = {}
        self.closed = False

    def register(self, fd: int) -> Registration | None:
        """Add ``fd`` (the kernel reports it at once if data is already there);
        ``None`` if it cannot be (the run is ending, or the kernel refused)."""
        if self.closed:
            return None
        try:
            self._epoll.register(fd, _EVENTS_ET)
        except OSError:
            return None
        registration = Registration(self, fd)
        self._registered[fd] = registration
        return registration

    def unregister(self, registration: Registration) -> None:
        """Remove a socket before it is closed (a copy of its file descriptor would
        otherwise keep it in the set); a task waiting on it wakes up."""
        fd = registration.fd
        if registration.active:
            registration.active = False
            # Not if its number went to a newer socket (this one closed without us).
            if self._registered.get(fd) is registration:
                del self._registered[fd]
                try:
                    self._epoll.unregister(fd)
                except OSError:
                    pass
        task = registration.task
        if task is not None:
            registration.task = None
            trio.lowlevel.reschedule(task)

    async def wait_readable(self, registration: Registration) -> None:
        """Wait until an event came for the socket since the last read (a spurious
        wake-up is possible: the read then finds nothing and waits again). The caller
        checks :attr:`Registration.active` first."""
        if registration.ready:
            registration.ready = False
            try:
                await trio.lowlevel.checkpoint()
            except BaseException:
                registration.ready = True  # cancelled: the next wait must not miss it
                raise
            return
        if registration.task is not None:
            raise trio.BusyResourceError("another task is already waiting for this socket")
        registration.task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            registration.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def run(self) -> None:
        """Wait for the epoll set and wake the readers, until the run ends."""
        epoll = self._epoll
        registered = self._registered
        reschedule = trio.lowlevel.reschedule
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                events = epoll.poll(0, _MAX_EVENTS)
                for fd, _ in events:
                    registration = registered.get(fd)
                    if registration is None:
                        continue
                    task = registration.task
                    if task is None:
                        registration.ready = True
                    else:
                        registration.task = None
                        reschedule(task)
        finally:
            self.close()

    def close(self) -> None:
        """End the hub: the set is closed and waiting readers wake up."""
        self.closed = True
        registered = list(self._registered.values())
        self._registered.clear()
        if not self._epoll.closed:
            trio.lowlevel.notify_closing(self._epoll.fileno())
            self._epoll.close()
        for registration in registered:
            registration.active = False
            task = registration.task
            if task is not None:
                registration.task = None
                trio.lowlevel.reschedule(task)


_HUB: trio.lowlevel.RunVar[ReadinessHub | None] = trio.lowlevel.RunVar("trio_wsroutes_readiness")


def readiness_hub() -> ReadinessHub | None:
    """The hub of the current Trio run, started on first use; ``None`` where there is no
    epoll (every platform but Linux) or the run is ending."""
    try:
        return _HUB.get()
    except LookupError:
        pass
    hub: ReadinessHub | None = None
    if _SUPPORTED:
        hub = ReadinessHub()
        try:
            # An empty context: the hub outlives the connection that started it.
            trio.lowlevel.spawn_system_task(
                hub.run, name="trio_wsroutes readiness hub", context=contextvars.Context()
            )
        except RuntimeError:  # the run is ending: no new system tasks
            hub.close()
            hub = None
    _HUB.set(hub)
    return hub
