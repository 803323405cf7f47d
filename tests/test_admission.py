"""Admission's one decision of which route serves a path: the same answer for an
upgrade and for a plain HTTP request (native transport)."""

from __future__ import annotations

import orjson
import pytest

from trio_wsroutes import WebSocketServer, create_websocket_route
from trio_wsroutes._admission import Admission, refusal
from trio_wsroutes.testing import ConnectionDenied, TestClient, TransportName


def admission_of(server: WebSocketServer) -> Admission:
    return server._admitter()  # pyright: ignore[reportPrivateUsage]


def chat_server() -> WebSocketServer:
    return WebSocketServer(
        [create_websocket_route("/chat/:room"), create_websocket_route("/chat/lobby")]
    )


def test_the_route_for_a_path_comes_with_its_parameters() -> None:
    admission = admission_of(chat_server())
    found = admission.route("/chat/kitchen")
    assert found is not None
    spec, params = found
    assert (spec.path, params) == ("/chat/:room", {"room": "kitchen"})
    lobby = admission.route("/chat/lobby")
    assert lobby is not None
    assert (lobby[0].path, lobby[1]) == ("/chat/lobby", {})  # static wins
    assert admission.route("/chat") is None
    assert admission.route("/chat/a/b") is None
    assert admission.route("/elsewhere") is None


def test_plain_http_gets_426_on_a_route_path_and_404_elsewhere() -> None:
    admission = admission_of(chat_server())
    status, headers, body = admission.plain_http("/chat/kitchen")
    assert status == 426
    assert ("upgrade", "websocket") in headers
    assert orjson.loads(body)["code"] == "UPGRADE_REQUIRED"
    assert admission.plain_http("/nowhere") == refusal(404, "Not Found", "NOT_FOUND")


def test_a_refusal_has_a_json_body_and_keeps_its_own_content_type() -> None:
    status, headers, body = refusal(503, "Busy", "SERVER_BUSY", {"Retry-After": "1"})
    assert status == 503
    assert list(headers) == [("content-type", "application/json"), ("retry-after", "1")]
    assert orjson.loads(body) == {"message": "Busy", "code": "SERVER_BUSY"}
    _, headers, _ = refusal(400, "x", "X", {"Content-Type": "text/html"})
    assert list(headers) == [("content-type", "application/json")]


@pytest.mark.parametrize("path", ["/nowhere", "/chat", "/chat/a/b"])
async def test_an_upgrade_to_an_unknown_path_is_denied_as_plain_http_is(
    path: str, memory_transport: TransportName
) -> None:
    server = chat_server()
    async with TestClient(server, transport=memory_transport) as client:
        with pytest.raises(ConnectionDenied) as denied:
            async with client.connect(path):
                pass
    status, _, body = admission_of(server).plain_http(path)
    assert denied.value.status == status == 404
    assert denied.value.body == body
