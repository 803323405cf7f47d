"""ASGI type aliases, shared by the server, the transports and the testing client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]

Scope = MutableMapping[str, Any]
"""An ASGI connection scope."""
Message = MutableMapping[str, Any]
"""An ASGI event (``{"type": "websocket.receive", ...}``)."""
Receive = Callable[[], Awaitable[Message]]
"""The ``receive`` callable of an ASGI app."""
Send = Callable[[Message], Awaitable[None]]
"""The ``send`` callable of an ASGI app."""
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""Any ASGI 3 application (Starlette, Quart, a plain function...)."""
