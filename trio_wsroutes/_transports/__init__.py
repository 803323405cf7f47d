"""Transports: how the connection engine reaches the network.

The engine (``_connection.py``) depends only on :class:`Transport`; each module here adapts
one server to it. ``asgi.py`` serves under hypercorn (or any ASGI server); ``native.py``
is the server's own WebSocket server on Trio sockets and the ``websockets`` sans-I/O
protocol.
"""

from ._base import Disconnect as Disconnect
from ._base import Transport as Transport
from ._base import TransportClosed as TransportClosed
from ._base import Violation as Violation
from .asgi import ASGITransport as ASGITransport
