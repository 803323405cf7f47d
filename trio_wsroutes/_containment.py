"""What a failure in application code may reach: its own connection, never the server."""

from __future__ import annotations

import trio

__all__ = ["must_propagate"]


def must_propagate(exc: BaseException) -> bool:
    """Whether an exception must travel on rather than stay where it was raised: Trio's
    cancellation does (alone or in a group); anything else a handler, a hook or an
    ``authenticate`` function lets out (``KeyboardInterrupt`` and ``SystemExit``
    included) is contained to its connection, never the server's."""
    if isinstance(exc, trio.Cancelled):
        return True
    inner: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
    return isinstance(exc, BaseExceptionGroup) and any(must_propagate(e) for e in inner)
