"""Running under hypercorn from Python, and refusing permessage-deflate there.

:func:`serve` runs hypercorn's trio worker with the server's settings (TLS from an
``ssl.SSLContext`` included).

Refusing permessage-deflate (server option ``compression=False``):

hypercorn (0.17, 0.18) always accepts permessage-deflate when a client offers it: its
``Handshake.accept`` builds ``extensions = [PerMessageDeflate()]`` and nothing in its
config or in ASGI turns that off. The only way is to wrap that method, which this module
does, explicitly and narrowly:

* only for the hypercorn versions it was checked against (:data:`SUPPORTED`), and only
  when ``Handshake.accept`` and ``Handshake.extensions`` are still there;
* only for the connections of a server with ``compression=False``: the wrapper reads a
  context variable that the ASGI transport sets around its own ``websocket.accept``
  (hypercorn calls ``Handshake.accept`` from inside the app's ``send``, so the variable
  is visible there). Other apps in the process are not affected.

On any other hypercorn the patch is not installed, a warning is logged once, and
compression stays on.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import ssl
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any, cast
from urllib.parse import urlsplit

import trio

__all__ = ["SUPPORTED", "install", "refuse_compression", "serve"]

logger = logging.getLogger("trio_wsroutes")

SUPPORTED = ("0.17.", "0.18.")
"""hypercorn version prefixes whose ``Handshake.accept`` the patch was checked against."""

refuse_compression: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "trio_wsroutes_refuse_compression", default=False
)
"""Set while the ASGI transport sends ``websocket.accept`` for a server without
compression."""

_state: dict[str, bool] = {}


def install() -> bool:
    """Install the wrapper once; ``True`` if compression can be refused."""
    installed = _state.get("installed")
    if installed is not None:
        return installed
    _state["installed"] = ok = _install()
    return ok


def _install() -> bool:
    try:
        version = metadata.version("hypercorn")
        from hypercorn.protocol import ws_stream
    except Exception:  # hypercorn is not there: nothing to patch
        return False
    handshake: Any = getattr(ws_stream, "Handshake", None)
    original: Any = getattr(handshake, "accept", None)
    if (
        not version.startswith(SUPPORTED)
        or not callable(original)
        or not _has_extensions_attribute(handshake)
    ):
        logger.warning(
            "compression=False is not supported on hypercorn %s: permessage-deflate "
            "stays on (checked versions: %s)",
            version,
            ", ".join(v + "x" for v in SUPPORTED),
        )
        return False
    if getattr(original, "__trio_wsroutes__", False):
        return True

    @functools.wraps(original)
    def accept(self: Any, *args: Any, **kwargs: Any) -> Any:
        if refuse_compression.get():
            self.extensions = None  # as if the client had offered none
        return original(self, *args, **kwargs)

    accept.__trio_wsroutes__ = True  # type: ignore[attr-defined]
    handshake.accept = accept
    return True


def _has_extensions_attribute(handshake: Any) -> bool:
    # Handshake sets ``self.extensions`` from Sec-WebSocket-Extensions in __init__.
    init = getattr(handshake, "__init__", None)
    code = getattr(init, "__code__", None)
    return code is not None and "extensions" in code.co_names


async def serve(
    app: Any,
    host: str,
    port: int,
    *,
    config: Any = None,
    ssl_context: ssl.SSLContext | None = None,
    max_message_size: int | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` with hypercorn's trio worker on ``host:port`` until
    ``shutdown_trigger`` returns; reports the bound ``(host, port)`` pairs.

    ``config`` is a ``hypercorn.config.Config`` for everything else (its ``bind`` is
    replaced). ``ssl_context`` serves TLS with that context (hypercorn's own config only
    takes certificate files).
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve as _hypercorn_serve  # pyright: ignore[reportUnknownVariableType]

    hypercorn_serve = cast("Callable[..., Awaitable[None]]", _hypercorn_serve)
    config = config if config is not None else Config()
    if ssl_context is not None:
        config = _with_ssl_context(config, ssl_context)
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    if max_message_size is not None:
        config.websocket_max_message_size = max_message_size
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(
            functools.partial(hypercorn_serve, app, config, shutdown_trigger=shutdown_trigger)
        )
        addresses: list[tuple[str, int]] = []
        for url in urls:
            parts = urlsplit(url)
            addresses.append((parts.hostname or host, parts.port or port))
        task_status.started(addresses)


def _with_ssl_context(config: Any, context: ssl.SSLContext) -> Any:
    """A copy of ``config`` that serves TLS with ``context``."""
    base: type[Any] = config.__class__

    class _TLSConfig(base):  # type: ignore[misc]
        @property
        def ssl_enabled(self) -> bool:
            return True

        def create_ssl_context(self) -> ssl.SSLContext:
            return context

    copy: Any = _TLSConfig.__new__(_TLSConfig)
    copy.__dict__.update(config.__dict__)
    return copy
