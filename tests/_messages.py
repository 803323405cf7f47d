"""Message classes that many tests share: a ping a route answers with a pong.

``Ping``/``Pong`` carry a number (``n``, 0 when a client leaves it out); ``TimedPing``/
``TimedPong`` a timestamp, as in the tutorial. Tests whose messages say something of their
own define them beside the test.
"""

from __future__ import annotations

import attrs

from trio_wsroutes import message

__all__ = ["Ping", "Pong", "TimedPing", "TimedPong"]


@attrs.frozen
class Ping:
    """``{"type": "ping", "data": {"n": 1}}``."""

    n: int = 0


@message("pong")
@attrs.frozen
class Pong:
    """The answer to a :class:`Ping`: ``{"type": "pong", "data": {"n": 1}}``."""

    n: int


@attrs.frozen
class TimedPing:
    """``{"type": "ping", "data": {"timestamp": 1.5}}``."""

    timestamp: float


@message("pong")
@attrs.frozen
class TimedPong:
    """The answer to a :class:`TimedPing`."""

    timestamp: float
