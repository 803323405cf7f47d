"""The plain HTTP answers a server gives itself, by exact path: the Prometheus metrics
and the admin page.

Both transports consult one table: the ASGI entry point before ``http_app``, the native
transport for every request that is not an upgrade. An endpoint answers ``GET`` and
``HEAD`` (the same headers, no body); any other method gets 405.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from ._request import Request
from ._types import Receive, Scope, Send

__all__ = ["HTTPAnswer", "HTTPEndpoints", "HTTPHandler", "answer_with", "send_asgi_answer"]

HTTPAnswer = tuple[int, Sequence[tuple[str, str]], bytes]
"""An HTTP response: status, headers, body."""

HTTPHandler = Callable[[Request], Awaitable[HTTPAnswer]]
"""What answers a ``GET`` (or ``HEAD``) for one path."""

_METHODS: Final = ("GET", "HEAD")

_NOT_ALLOWED: Final[HTTPAnswer] = (
    405,
    [("allow", "GET, HEAD"), ("content-type", "text/plain; charset=utf-8")],
    b"Method Not Allowed",
)


class HTTPEndpoints:
    """Handlers by exact path (no parameters, no prefixes)."""

    __slots__ = ("_handlers",)

    def __init__(self) -> None:
        self._handlers: dict[str, HTTPHandler] = {}

    def add(self, path: str, handler: HTTPHandler) -> None:
        """Answer requests for ``path`` with ``handler``; a path is served once."""
        if path in self._handlers:
            raise ValueError(f"two HTTP endpoints at {path!r} (the metrics and the admin page?)")
        self._handlers[path] = handler

    def __contains__(self, path: object) -> bool:
        return path in self._handlers

    async def answer(self, request: Request) -> HTTPAnswer | None:
        """The answer to ``request``, or ``None`` when no endpoint serves its path."""
        handler = self._handlers.get(request.path)
        if handler is None:
            return None
        if request.method not in _METHODS:
            return _NOT_ALLOWED
        return await handler(request)

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer an ASGI HTTP request if an endpoint serves its path; whether it did."""
        if scope.get("path") not in self._handlers:
            return False
        answer = await self.answer(Request.from_scope(scope))
        assert answer is not None
        await send_asgi_answer(send, answer, head=scope.get("method") == "HEAD")
        return True


async def send_asgi_answer(send: Send, answer: HTTPAnswer, *, head: bool = False) -> None:
    """Send ``answer`` as an ASGI HTTP response (headers only for a ``HEAD``)."""
    status, headers, body = answer
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})


async def answer_with(handler: HTTPHandler, scope: Scope, send: Send) -> None:
    """Serve one ASGI HTTP request with ``handler`` whatever its path (a mounted app)."""
    if scope["type"] != "http":
        return
    request = Request.from_scope(scope)
    answer = _NOT_ALLOWED if request.method not in _METHODS else await handler(request)
    await send_asgi_answer(send, answer, head=request.method == "HEAD")
