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

Compressing without context takeover: for this library's connections the bounded
``PerMessageDeflate`` answers with ``server_no_context_takeover`` (RFC 7692 lets a server
add it), so wsproto drops its compressor after each message instead of keeping a 15-bit
window and its tables for the life of the connection, and asks a client that offers
``client_max_window_bits`` for a 4 KiB window (as the native transport does). An idle
connection that has exchanged compressed messages held about 100 KiB more than one that
had not; it now holds a few KiB more.

Containing a connection's failure, and bounding TLS handshakes (:func:`install_containment`):

hypercorn (0.17, 0.18) lets an exception raised while it serves one connection leave
``TCPServer.run``, which runs in the nursery of its accept loop: the exception ends the
whole server (and, under ``hypercorn --workers N``, every worker). One request is
enough: an upgrade request with a body gets a 400, then h11 raises
``LocalProtocolError("Can't send data when our state is ERROR")`` from hypercorn's
``_send_error_response``. :func:`install_containment` wraps ``TCPServer.run`` (which
``TCPServer.__await__`` calls) so that such an exception ends its own connection only:
it is logged on one line at warning level and the stream is closed. Cancellation,
``KeyboardInterrupt`` and ``SystemExit`` go through as before. The wrapper also bounds the
TLS handshakes of this library's servers (the app hypercorn runs is a
``WebSocketServer``): it waits for the ClientHello without reading it, within the
server's ``handshake_timeout`` (or the config's ``ssl_handshake_timeout`` when it sets
one), then runs the handshake in one of ``max_pending_handshakes`` slots (see
``_handshakes.py``). hypercorn accepts every connection itself and builds its TLS object
at once (about 17 KiB with its task, until the ClientHello comes), so the wrapper cannot
leave connections in the kernel's backlog as the native server does: up to
:data:`WAITING_ROOM` times ``max_pending_handshakes`` may wait for their ClientHello (or
for a slot), and past that the oldest is dropped at once. Installed for the checked
versions (:data:`SUPPORTED`) only; on others a warning is logged once and hypercorn's
behaviour is unchanged.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import ssl
import sys
import weakref
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any, cast
from urllib.parse import urlsplit

import trio

from ._handshakes import HandshakeSlots, PendingHandshake, client_hello_arrived

__all__ = [
    "SUPPORTED",
    "SUPPORTED_WSPROTO",
    "InflateLimit",
    "default_inflate_limit",
    "inflate_limit",
    "install",
    "install_bounded_inflate",
    "install_containment",
    "install_containment_if_loaded",
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
_DEFLATE_METHODS = (
    "frame_inbound_header",
    "frame_inbound_payload_data",
    "frame_inbound_complete",
    "_parse_params",
)
CLIENT_WINDOW_BITS = 12
"""The window asked of clients that offer ``client_max_window_bits`` (4 KiB)."""


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
            limit = inflate_limit.get()
            if limit is not None and not args and not kwargs:
                # This library's connection: no compressor kept between messages.
                kwargs = {"server_no_context_takeover": True}
            super().__init__(*args, **kwargs)
            self._wsroutes_limit: InflateLimit | None = limit
            self._wsroutes_inflated = 0

        def _parse_params(self, params: str) -> tuple[int | None, int | None]:
            client_bits, server_bits = super()._parse_params(params)
            if self._wsroutes_limit is not None and client_bits is not None:
                # The client offered client_max_window_bits: the server may answer with
                # a smaller window (without the offer, the client's window is 15 bits).
                client_bits = min(client_bits, CLIENT_WINDOW_BITS)
            return client_bits, server_bits

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


def install_containment_if_loaded() -> bool:
    """:func:`install_containment` when hypercorn is imported (the process runs under
    it); ``False`` otherwise. Cheap: called when a server is made and at its startup."""
    if "hypercorn" not in sys.modules:
        return False
    return install_containment()


def install_containment() -> bool:
    """Wrap hypercorn's ``TCPServer.run`` (once) so that a failure in one connection ends
    only that connection, and TLS handshakes are bounded; ``True`` if installed.

    ``False`` when hypercorn is not installed, or is a version the wrapper was not
    checked against (a warning is logged once).
    """
    contained = _state.get("contained")
    if contained is not None:
        return contained
    _state["contained"] = ok = _install_containment()
    return ok


def _install_containment() -> bool:
    try:
        version = metadata.version("hypercorn")
        from hypercorn.trio import tcp_server
    except Exception:  # hypercorn (or its trio worker) is not there: nothing to wrap
        return False
    server_class: Any = getattr(tcp_server, "TCPServer", None)
    original: Any = getattr(server_class, "run", None)
    if (
        not version.startswith(SUPPORTED)
        or not inspect.iscoroutinefunction(original)
        or not _awaits_run(server_class)
    ):
        logger.warning(
            "hypercorn %s is not a version this library checked (%s): an exception "
            "raised while hypercorn serves one connection may stop the whole server, "
            "and TLS handshakes are not bounded",
            version,
            ", ".join(v + "x" for v in SUPPORTED),
        )
        return False
    if getattr(original, "__trio_wsroutes__", False):
        return True

    @functools.wraps(original)
    async def run(self: Any) -> None:
        try:
            if await _bounded_tls_handshake(self):
                await original(self)
        except Exception as exc:  # Cancelled, KeyboardInterrupt, SystemExit go on
            _log_contained(exc)
            await trio.aclose_forcefully(self.stream)

    run.__trio_wsroutes__ = True  # type: ignore[attr-defined]
    server_class.run = run
    return True


def _awaits_run(server_class: Any) -> bool:
    # ``TCPServer.__await__`` is ``return self.run().__await__()``: wrapping run covers it.
    code = getattr(getattr(server_class, "__await__", None), "__code__", None)
    return code is not None and "run" in code.co_names


_handshake_slots: weakref.WeakKeyDictionary[Any, tuple[HandshakeSlots, HandshakeSlots]] = (
    weakref.WeakKeyDictionary()
)
WAITING_ROOM = 4
"""Under hypercorn, connections that may wait for their ClientHello, per handshake slot."""


def _log_contained(exc: BaseException) -> None:
    leaf = exc
    while True:  # the first exception of a group (hypercorn's task group raises them)
        inner: tuple[BaseException, ...] = getattr(leaf, "exceptions", ())
        if not inner:
            break
        leaf = inner[0]
    text = str(leaf)
    logger.warning(
        "hypercorn failed while serving a connection (%s: %r); that connection was "
        "closed, the server goes on",
        type(leaf).__name__,
        text if len(text) <= 200 else text[:200] + "...",
    )


def _our_server(app: Any) -> Any:
    """The ``WebSocketServer`` hypercorn runs (behind its app wrapper), or ``None``."""
    inner = getattr(app, "app", app)
    if hasattr(inner, "max_pending_handshakes") and hasattr(inner, "handshake_timeout"):
        return inner
    return None


async def _bounded_tls_handshake(connection: Any) -> bool:
    """For a TLS connection of this library's server: wait for the ClientHello without
    reading it, then run the TLS handshake in one of the server's slots, all within its
    deadline. ``False`` (the stream closed) if it did not complete."""
    stream: Any = connection.stream
    server = _our_server(connection.app)
    if server is None or not isinstance(stream, trio.SSLStream):
        return True
    tls = cast("trio.SSLStream[trio.SocketStream]", stream)
    config = connection.config
    timeout: float = (
        config.ssl_handshake_timeout
        if "ssl_handshake_timeout" in vars(config)
        else server.handshake_timeout
    )
    waiting_room, slots = _slots_of(server)
    slot: PendingHandshake | None = None
    completed = False
    try:
        slot = await _slot_after_client_hello(
            tls, waiting_room, slots, trio.current_time() + timeout
        )
        if slot is not None:
            with slot.guard():
                await tls.do_handshake()
                completed = True
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the handshake failed: hypercorn would have dropped it too
    finally:
        if slot is not None:
            slot.done()
        if not completed:
            await trio.aclose_forcefully(tls)
    return completed


def _slots_of(server: Any) -> tuple[HandshakeSlots, HandshakeSlots]:
    """The server's connections waiting for their ClientHello (or for a slot), and its
    TLS handshakes in progress."""
    slots = _handshake_slots.get(server)
    if slots is None:
        limit: int | None = server.max_pending_handshakes
        # hypercorn has accepted them already: past the limit, the oldest is dropped at
        # once (a client sends its ClientHello right after connecting).
        waiting_room = HandshakeSlots(
            None if limit is None else limit * WAITING_ROOM, evictable_after=0.0
        )
        slots = _handshake_slots[server] = (waiting_room, HandshakeSlots(limit))
    return slots


async def _slot_after_client_hello(
    tls: trio.SSLStream[trio.SocketStream],
    waiting_room: HandshakeSlots,
    slots: HandshakeSlots,
    deadline: float,
) -> PendingHandshake | None:
    """A handshake slot once the ClientHello is all there, or ``None`` (the peer left,
    sent something else, was dropped to make room, or the deadline passed)."""
    waiting = await waiting_room.admit(deadline)
    try:
        with waiting.guard():
            if await client_hello_arrived(tls.transport_stream.socket):
                return await slots.admit(deadline)
    finally:
        waiting.done()
    return None


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
    install_containment()
    if config is None:
        config = Config()
        # hypercorn queues up to this many received messages per connection before the
        # app reads them (10 by default), outside the engine's own bounds: keep it small.
        config.max_app_queue_size = 2
    timeout = getattr(app, "handshake_timeout", None)
    if timeout is not None and "ssl_handshake_timeout" not in vars(config):
        # hypercorn's own default is 60 s.
        config.ssl_handshake_timeout = timeout
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
