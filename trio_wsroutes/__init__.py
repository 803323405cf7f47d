"""Typed WebSocket routes for Trio, served by hypercorn's trio worker.

::

    chat = create_websocket_route("/chat/:room").server_messages(ChatOut, Pong)

    @chat.on("ping", Ping)
    async def ping(ws: Connection[ChatOut | Pong], data: Ping, ctx: Context[None]) -> Pong:
        return Pong(timestamp=time.time())

    server = WebSocketServer([chat])

Run with ``hypercorn --worker-class trio module:server``.
"""

from ._access_log import JSONFormatter as JSONFormatter
from ._admin import Admin as Admin
from ._auth import Reject as Reject
from ._auth import RequestInfo as RequestInfo
from ._auth import create_token_auth as create_token_auth
from ._auth import extract_bearer_token as extract_bearer_token
from ._auth import extract_cookie_token as extract_cookie_token
from ._auth import extract_query_token as extract_query_token
from ._auth import extract_request_info as extract_request_info
from ._auth import extract_token as extract_token
from ._auth import no_auth as no_auth
from ._broker import Broker as Broker
from ._broker import MemoryBroker as MemoryBroker
from ._broker import RedisBroker as RedisBroker
from ._broker import RedisBrokerStats as RedisBrokerStats
from ._broker import Subscriber as Subscriber
from ._codes import CloseCode as CloseCode
from ._context import Context as Context
from ._engine import Connection as Connection
from ._engine import ConnectionClosed as ConnectionClosed
from ._errors import ErrorDetail as ErrorDetail
from ._errors import MessageError as MessageError
from ._errors import ProtocolError as ProtocolError
from ._errors import ValidationError as ValidationError
from ._frames import Frame as Frame
from ._history import History as History
from ._history import HistoryPage as HistoryPage
from ._history import HistoryPolicy as HistoryPolicy
from ._history import Position as Position
from ._history import Publication as Publication
from ._history import Recovery as Recovery
from ._messages import message as message
from ._metrics import Histogram as Histogram
from ._metrics import RouteStats as RouteStats
from ._observability import Metrics as Metrics
from ._origins import OriginPolicy as OriginPolicy
from ._presence import Presence as Presence
from ._presence import PresenceEntry as PresenceEntry
from ._presence import PresenceJoin as PresenceJoin
from ._presence import PresenceLeave as PresenceLeave
from ._presence import PresencePolicy as PresencePolicy
from ._presence import PresenceStats as PresenceStats
from ._registry import ConnectionRegistry as ConnectionRegistry
from ._request import Headers as Headers
from ._request import QueryParams as QueryParams
from ._request import Request as Request
from ._request import TrustedProxies as TrustedProxies
from ._routes import WebSocketRoute as WebSocketRoute
from ._routes import create_websocket_route as create_websocket_route
from ._server import BoundAddress as BoundAddress
from ._server import WebSocketServer as WebSocketServer
from ._serving import StartupError as StartupError
from ._spec import RateLimit as RateLimit
from ._stats import ServerStats as ServerStats
from ._tokens import Authenticated as Authenticated
from ._typegen import TypeGenerationError as TypeGenerationError
from ._typegen import generate_asyncapi as generate_asyncapi
from ._typegen import generate_json_schema as generate_json_schema
from ._typegen import generate_websocket_types as generate_websocket_types
from ._validation import converter as converter
from ._version import __version__ as __version__
from ._workers import serve_native_workers as serve_native_workers
