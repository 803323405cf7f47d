"""Transports: how the connection engine reaches the network.

The engine (``_engine/``) depends only on :class:`Transport` and its optional parts
(``_base.py``); each
module here adapts one way of serving to it: ``asgi.py`` serves under hypercorn (or any
ASGI server), ``native.py`` is the server's own WebSocket server over any Trio stream (TCP,
TLS, in-memory) with the ``websockets`` sans-I/O protocol, ``_hypercorn.py`` runs
hypercorn from Python. Nothing here imports the engine, routes or brokers.
"""

from ._base import NEEDS_FLUSH as NEEDS_FLUSH
from ._base import Disconnect as Disconnect
from ._base import FrameTransport as FrameTransport
from ._base import NeedsFlush as NeedsFlush
from ._base import NonBlockingWriter as NonBlockingWriter
from ._base import Transport as Transport
from ._base import TransportClosed as TransportClosed
from ._base import Violation as Violation
