"""Running under hypercorn from Python; bounding, or refusing, permessage-deflate there.

:func:`serve` runs hypercorn's trio worker with the server's settings (TLS from an
``ssl.SSLContext`` included).

Bounding permessage-deflate (compression on, the default):

hypercorn hands each chunk of a compressed frame to wsproto's ``PerMessageDeflate``,
which inflates it whole (``zlib.decompressobj().decompress(data)``, no ``max_length``);
``websocket_max_message_size`` is checked only afterwards, on the inflated text. A 100 KB
frame of zeros inflated to 100 MiB before the 1009: about 190 MiB (tracemalloc) for one
connection, and ten such connections held more than a gigabyte. :func:`install_bounded_inflate`
replaces the ``PerMessageDeflate`` name in ``hypercorn.protocol.ws_stream`` (the one its
``Handshake.accept`` instantiates) by a subclass that inflates with ``max_length``: never
more than one byte over what the message may still grow by, and the frame is refused with
1009 (``MESSAGE_TOO_BIG``) as soon as the message would pass the limit, before the bytes
are allocated. hypercorn then ends the connection (as it does for wsproto's other
protocol errors, without sending the close frame). The subclass bounds only the
connections of this library's ASGI transport, which sets :data:`inflate_limit` around its
own ``websocket.accept``; other apps in the process keep wsproto's behaviour. It relies on
wsproto's private inflate state (``_decompressor``, ``_inbound_compressed``,
``_inbound_is_compressible``), so it is installed only for the versions checked
(:data:`SUPPORTED`, :data:`SUPPORTED_WSPROTO`) and when those attributes are there. On
any other version the inflation cannot be bounded: the ASGI transport then refuses
permessage-deflate (as with ``compression=False``, below) and a warning is logged once.

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

__all__ = [
    "SUPPORTED",
    "SUPPORTED_WSPROTO",
    "InflateLimit",
    "default_inflate_limit",
    "inflate_limit",
    "install",
    "install_bounded_inflate",
    "refuse_compression",
    "serve",
]

logger = logging.getLogger("trio_wsroutes")

SUPPORTED = ("0.17.", "0.18.")
"""hypercorn version prefixes whose ``Handshake.accept`` the patch was checked against."""

refuse_compression: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "trio_wsroutes_refuse_compression", default=False
)
"""Set while the ASGI transport sends ``websocket.accept`` for a server without
compression."""

SUPPORTED_WSPROTO = ("1.2.", "1.3.")
"""wsproto version prefixes whose ``PerMessageDeflate`` the bounded subclass was checked
against."""

_DEFLATE_STATE = ("_decompressor", "_inbound_compressed", "_inbound_is_compressible")
_DEFLATE_METHODS = ("frame_inbound_header", "frame_inbound_payload_data", "frame_inbound_complete")


class InflateLimit:
    """The largest message, inflated, that one connection may receive: ``size`` bytes.

    The ASGI transport makes one per connection and sets :data:`inflate_limit` to it
    around ``websocket.accept``; the bounded ``PerMessageDeflate`` made during the accept
    keeps it, and the transport raises or lowers ``size`` when the engine tells it the
    route's ``max_payload_length``.
    """

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


inflate_limit: contextvars.ContextVar[InflateLimit | None] = contextvars.ContextVar(
    "trio_wsroutes_inflate_limit", default=None
)
"""Set while the ASGI transport sends ``websocket.accept`` with compression on."""

default_inflate_limit: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "trio_wsroutes_default_inflate_limit", default=None
)
"""The server's ``max_payload_length``, set by :func:`serve` for every connection it runs
(``None`` under the hypercorn command line: the transport falls back to its own)."""

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


def install_bounded_inflate() -> bool:
    """Bound hypercorn's permessage-deflate inflation (once); ``True`` if it is bounded.

    ``False`` when hypercorn is not installed (nothing to bound) or when its version, or
    wsproto's, is not one the subclass was checked against (a warning is logged once:
    the transport then refuses compression instead).
    """
    bounded = _state.get("bounded")
    if bounded is not None:
        return bounded
    _state["bounded"] = ok = _install_bounded_inflate()
    return ok


def _install_bounded_inflate() -> bool:
    try:
        version = metadata.version("hypercorn")
        wsproto_version = metadata.version("wsproto")
        from hypercorn.protocol import ws_stream
        from wsproto import extensions
    except Exception:  # hypercorn (or wsproto) is not there: nothing to bound
        return False
    current: Any = getattr(ws_stream, "PerMessageDeflate", None)
    base: Any = getattr(extensions, "PerMessageDeflate", None)
    if (
        not version.startswith(SUPPORTED)
        or not wsproto_version.startswith(SUPPORTED_WSPROTO)
        or base is None
        or not (current is base or getattr(current, "__trio_wsroutes__", False))
        or not _has_inflate_state(base)
    ):
        logger.warning(
            "permessage-deflate is refused on hypercorn %s with wsproto %s: the size of an "
            "inflated message cannot be bounded there before it is allocated (checked "
            "versions: hypercorn %s, wsproto %s)",
            version,
            wsproto_version,
            ", ".join(v + "x" for v in SUPPORTED),
            ", ".join(v + "x" for v in SUPPORTED_WSPROTO),
        )
        return False
    if current is base:
        setattr(ws_stream, "PerMessageDeflate", _bounded_deflate())  # noqa: B010
    return True


def _has_inflate_state(base: Any) -> bool:
    try:
        probe = base()
    except Exception:
        return False
    return all(hasattr(probe, name) for name in _DEFLATE_STATE) and all(
        callable(getattr(base, name, None)) for name in _DEFLATE_METHODS
    )


def _bounded_deflate() -> type[Any]:
    """wsproto's ``PerMessageDeflate``, inflating at most up to the connection's limit."""
    import zlib

    from wsproto.extensions import PerMessageDeflate
    from wsproto.frame_protocol import CloseReason

    class BoundedPerMessageDeflate(PerMessageDeflate):
        __trio_wsroutes__ = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._wsroutes_limit: InflateLimit | None = inflate_limit.get()
            self._wsroutes_inflated = 0

        def frame_inbound_header(
            self, proto: Any, opcode: Any, rsv: Any, payload_length: int
        ) -> Any:
            if self._inbound_compressed is None:  # the first frame of a message
                self._wsroutes_inflated = 0
            return super().frame_inbound_header(proto, opcode, rsv, payload_length)

        def frame_inbound_payload_data(self, proto: Any, data: bytes) -> Any:
            limit = self._wsroutes_limit
            if limit is None or not self._inbound_compressed or not self._inbound_is_compressible:
                return super().frame_inbound_payload_data(proto, data)
            return self._wsroutes_inflate(bytes(data), limit.size)

        def frame_inbound_complete(self, proto: Any, fin: bool) -> Any:
            limit = self._wsroutes_limit
            if (
                limit is None
                or not fin
                or not self._inbound_is_compressible
                or not self._inbound_compressed
            ):
                return super().frame_inbound_complete(proto, fin)
            data = self._wsroutes_inflate(b"\x00\x00\xff\xff", limit.size)
            if isinstance(data, CloseReason):
                return data
            if proto.client:
                no_context_takeover = self.server_no_context_takeover
            else:
                no_context_takeover = self.client_no_context_takeover
            if no_context_takeover:
                self._decompressor = None
            self._inbound_compressed = None
            self._wsroutes_inflated = 0
            return data

        def _wsroutes_inflate(self, data: bytes, size: int) -> Any:
            room = size - self._wsroutes_inflated
            decompressor = self._decompressor
            assert decompressor is not None  # made by frame_inbound_header
            try:
                # max_length is never 0 (which would mean no limit): at most room + 1
                # bytes are allocated, and one byte over the room refuses the message.
                out = decompressor.decompress(data, max(room, 0) + 1)
            except zlib.error:
                return CloseReason.INVALID_FRAME_PAYLOAD_DATA
            if len(out) > room:
                return CloseReason.MESSAGE_TOO_BIG
            self._wsroutes_inflated += len(out)
            return out

    BoundedPerMessageDeflate.__qualname__ = BoundedPerMessageDeflate.__name__
    return BoundedPerMessageDeflate


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
    if config is None:
        config = Config()
        # hypercorn queues up to this many received messages per connection before the
        # app reads them (10 by default), outside the engine's own bounds: keep it small.
        config.max_app_queue_size = 2
    if ssl_context is not None:
        config = _with_ssl_context(config, ssl_context)
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    if max_message_size is not None:
        config.websocket_max_message_size = max_message_size
    # Every connection hypercorn runs from here inherits it: its ASGI transport bounds
    # inflation to the server's limit from the first frame on.
    default_inflate_limit.set(config.websocket_max_message_size)
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
