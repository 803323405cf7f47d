"""The connection engine, in parts: the connection and its close state, the outbound
and inbound flows, and the dispatcher. It knows transports only through the
``Transport`` interface and routes only through their resolved ``RouteSpec``."""

from .closing import ConnectionClosed as ConnectionClosed
from .connection import Connection as Connection
from .connection import close_now as close_now
from .connection import new_context as new_context
from .connection import run_connection as run_connection
from .connection import subscribe_by_server as subscribe_by_server
from .refresh import TokenRefresh as TokenRefresh
from .refresh import token_refresh as token_refresh

__all__ = [
    "Connection",
    "ConnectionClosed",
    "TokenRefresh",
    "close_now",
    "new_context",
    "run_connection",
    "subscribe_by_server",
    "token_refresh",
]
