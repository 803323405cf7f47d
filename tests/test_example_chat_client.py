"""The chat example's browser client: TypeScript against the generated types.

``examples/chat/websocket-types.ts`` (generated) and ``examples/chat/client.js`` (tsc's
output for ``client.ts``) are committed; these tests fail when either is stale.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from examples.chat.app import server as chat_server
from tests import _typescript
from tests.test_hypercorn import http_get
from trio_wsroutes import BoundAddress, WebSocketServer, generate_websocket_types

ServeLive = Callable[[WebSocketServer], AbstractAsyncContextManager[BoundAddress]]

EXAMPLE = _typescript.ROOT / "examples" / "chat"
REGENERATE = "trio-wsroutes typegen examples.chat.app:server -o examples/chat/websocket-types.ts"
RECOMPILE = "node tests/ts/node_modules/typescript/bin/tsc -p examples/chat"


def test_committed_types_match_the_server() -> None:
    committed = (EXAMPLE / "websocket-types.ts").read_text()
    assert generate_websocket_types(chat_server) == committed, (
        f"examples/chat/websocket-types.ts is stale; run: {REGENERATE}"
    )


def test_client_ts_compiles_to_the_committed_client_js(tmp_path: Path) -> None:
    status, diagnostics, output = _typescript.tsc(
        "-p", str(EXAMPLE / "tsconfig.json"), "--outDir", str(tmp_path), cwd=_typescript.ROOT
    )
    assert status == 0, output
    assert diagnostics == []
    compiled = (tmp_path / "client.js").read_text()
    assert compiled == (EXAMPLE / "client.js").read_text(), (
        f"examples/chat/client.js is stale; run: {RECOMPILE} (then delete "
        "examples/chat/websocket-types.js)"
    )


@pytest.mark.transports("hypercorn")  # the page is served by the http_app
async def test_the_page_loads_the_compiled_client(serve_live: ServeLive) -> None:
    async with serve_live(chat_server) as address:
        page = await http_get(address, "/")
        assert b'<script type="module" src="client.js"></script>' in page.body
        assert b"<script>" not in page.body  # no inline script left
        script = await http_get(address, "/client.js")
        assert script.status == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert script.body == (EXAMPLE / "client.js").read_bytes()
