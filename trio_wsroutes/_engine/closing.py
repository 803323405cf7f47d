"""How a connection closes: one state, and one function that moves it on.

A connection closes for one of a few reasons, and each asks for different work: a
handler's ``ws.close()`` or a refusal lets what is queued go out first; an eviction, a
shutdown or a heartbeat timeout drops it and interrupts the send in progress; a peer that
left needs no close frame at all. :meth:`CloseState.advance` takes the event, decides
which code and reason stand (the first close wins: a later urgent one only hurries it),
and returns the :class:`CloseSteps` the connection carries out. Nothing else writes the
state, so "is it closing, with which code" has one answer.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from .._codes import CloseCode

__all__ = ["NO_STEPS", "CloseEvent", "CloseState", "CloseSteps", "ConnectionClosed"]


class ConnectionClosed(Exception):
    """Raised by ``send`` and friends on a connection that has closed."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed with code {code}")
        self.code: int = code
        self.reason: str = reason


class CloseEvent(enum.Enum):
    """What happened to the connection."""

    CLOSE = "close"
    """Close after what is queued (``ws.close()``, a refusal, a handler crash)."""
    CLOSE_NOW = "close now"
    """Close before what is queued (eviction, shutdown, heartbeat timeout)."""
    PEER_GONE = "peer gone"
    """The peer closed or the network failed: no close frame to send."""
    CANCELLED = "cancelled"
    """Cancelled from outside without a close (the server is going away): 1001."""
    FRAME_TAKEN = "frame taken"
    """The writer took the close frame (or stopped): it can no longer be replaced."""
    ENDED = "ended"
    """The connection's tasks are done."""


@attrs.frozen
class CloseSteps:
    """What the connection must do after an event."""

    started: bool = False
    """Closing started with this event: end the connection within ``close_timeout``."""
    queue_close: tuple[int, str] | None = None
    """Queue a close frame with this code and reason, after what is queued."""
    drop_queued: bool = False
    """Drop what is queued (and held) before queueing the close frame."""
    cancel_send: bool = False
    """Interrupt the send in progress, so that the close frame goes out next."""
    cancel_tasks: bool = False
    """End the connection's tasks now."""
    send_goodbye: bool = False
    """Send the close frame directly, briefly (the tasks are being cancelled)."""


NO_STEPS: Final = CloseSteps()


class CloseState:
    """Open, closing or ended; the close code and reason once closing."""

    __slots__ = ("by", "code", "frame_taken", "reason")

    def __init__(self) -> None:
        self.code: int | None = None
        """The close code, from the first close event on (``None`` while open)."""
        self.reason: str = ""
        self.by: str = ""
        """Who closed first: ``"server"`` (a handler, a limit, shutdown), ``"client"`` (its
        close frame) or ``"network"`` (the connection was lost without one)."""
        self.frame_taken = False
        """The writer has taken the close frame, or stopped."""

    @property
    def closing(self) -> bool:
        """Whether a close has begun (or the connection ended)."""
        return self.code is not None

    def advance(self, event: CloseEvent, code: int = 0, reason: str = "") -> CloseSteps:
        """Record ``event`` and return what to do; the one place the state changes."""
        if event is CloseEvent.FRAME_TAKEN:
            self.frame_taken = True
            return NO_STEPS
        if event is CloseEvent.ENDED:
            self.frame_taken = True
            if self.code is None:
                self.code, self.reason, self.by = CloseCode.ABNORMAL, "", "network"
            return NO_STEPS
        first = self.code is None
        if first:
            self.code, self.reason = code, reason
            if event is not CloseEvent.PEER_GONE:
                self.by = "server"
            else:
                self.by = "network" if code == CloseCode.ABNORMAL else "client"
        if event is CloseEvent.CLOSE:
            if not first:
                return NO_STEPS
            return CloseSteps(started=True, queue_close=(code, reason))
        if event is CloseEvent.CLOSE_NOW:
            if self.frame_taken:
                return NO_STEPS  # the close frame is on its way, or the writer is done
            assert self.code is not None
            return CloseSteps(
                started=first,
                queue_close=(self.code, self.reason),
                drop_queued=True,
                cancel_send=True,
            )
        if event is CloseEvent.PEER_GONE:
            return CloseSteps(cancel_tasks=True)
        assert event is CloseEvent.CANCELLED
        return CloseSteps(send_goodbye=first)
