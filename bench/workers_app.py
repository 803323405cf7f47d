"""The benchmark routes (``servers.wsroutes_server``) as a ``module:server`` target for
``trio-wsroutes serve --native --workers N``; with ``WSROUTES_REDIS_URL`` set, topics go
through a ``RedisBroker``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import wsroutes_server

from trio_wsroutes import RedisBroker, WebSocketServer

_url = os.environ.get("WSROUTES_REDIS_URL")
server = WebSocketServer(wsroutes_server().routes, broker=RedisBroker(_url) if _url else None)
