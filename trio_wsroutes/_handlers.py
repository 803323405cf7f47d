"""What a route's handlers are: their types (``MessageHandler``, ``ConnectHandler``, ...,
``AuthenticateFn``), and the check, when one is registered, that the engine can call it."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from ._request import Request

if TYPE_CHECKING:
    from ._context import Context
    from ._engine import Connection

__all__ = [
    "AuthenticateFn",
    "BinaryHandler",
    "CloseHandler",
    "ConnectHandler",
    "ErrorHandler",
    "MessageHandler",
    "SubscribeCheck",
    "TextHandler",
    "check_handler",
]

T = TypeVar("T")
U = TypeVar("U")
UserT = TypeVar("UserT")
ServerT = TypeVar("ServerT")

MessageHandler = Callable[["Connection[ServerT]", T, "Context[UserT]"], Awaitable[ServerT | None]]
"""``async def handler(ws, data, ctx) -> ServerMessage | None``; a returned message is the
reply, sent with the request's ``id``."""
ConnectHandler = Callable[["Connection[ServerT]", "Context[UserT]"], Awaitable[None]]
"""``async def on_connect(ws, ctx) -> None``."""
CloseHandler = Callable[["Connection[ServerT]", int, str, "Context[UserT]"], Awaitable[None]]
"""``async def on_close(ws, code, reason, ctx) -> None``."""
ErrorHandler = Callable[["Connection[ServerT]", Exception, "Context[UserT]"], Awaitable[None]]
"""``async def on_error(ws, error, ctx) -> None``."""
BinaryHandler = Callable[["Connection[ServerT]", bytes, "Context[UserT]"], Awaitable[None]]
"""``async def on_binary(ws, data, ctx) -> None``."""
TextHandler = Callable[["Connection[ServerT]", str, "Context[UserT]"], Awaitable[None]]
"""``async def on_text(ws, text, ctx) -> None``: a text frame that is not an envelope."""
SubscribeCheck = Callable[["Connection[ServerT]", str, "Context[UserT]"], Awaitable[bool] | bool]
"""``fn(ws, topic, ctx) -> bool`` (sync or async): may this connection subscribe to
``topic``?"""
AuthenticateFn = Callable[[Request], Awaitable[U | None]] | Callable[[Request], U | None]
"""``fn(request) -> user | None``, sync or async."""


def check_handler(fn: object, what: str, parameters: tuple[str, ...]) -> None:
    """Refuse, at definition time, a handler the engine could not call: not ``async``,
    or not callable with the positional arguments it will get."""
    # partial() and bound methods of async functions pass; so do objects whose
    # __call__ is async.
    if not (
        inspect.iscoroutinefunction(fn)
        or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
    ):
        raise TypeError(f"{what} must be an async function (async def), got {fn!r}")
    try:
        signature = inspect.signature(fn)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return  # a callable without a signature (some builtins): called as it is
    try:
        signature.bind(*parameters)
    except TypeError as exc:
        name = getattr(fn, "__name__", None) or repr(fn)
        qualified = f"{getattr(fn, '__module__', None) or '?'}.{getattr(fn, '__qualname__', name)}"
        takes = signature.replace(
            parameters=[
                p.replace(annotation=inspect.Parameter.empty)
                for p in signature.parameters.values()
            ],
            return_annotation=inspect.Signature.empty,
        )
        raise TypeError(
            f"{what} {qualified} cannot be called as {name}({', '.join(parameters)}): "
            f"{exc} (it takes {takes})"
        ) from None
