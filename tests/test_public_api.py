"""The public surface: the names of the API reference (``docs/reference.rst``) are a
contract."""

from __future__ import annotations

import inspect

import trio_wsroutes
import trio_wsroutes.client
import trio_wsroutes.testing

CONTRACT = {
    # The core of the API reference.
    "WebSocketServer",
    "create_websocket_route",
    "message",
    "Connection",
    "Context",
    "create_token_auth",
    "extract_bearer_token",
    "extract_query_token",
    "extract_token",
    "extract_request_info",
    "no_auth",
    "Reject",
    "MessageError",
    "MemoryBroker",
}

ALSO_PUBLIC = {
    # The admin page (docs/topics/admin.rst).
    "Admin",
    "Broker",
    "BoundAddress",
    "CloseCode",
    "ConnectionClosed",
    "ConnectionRegistry",
    "ErrorDetail",
    "extract_cookie_token",
    "Frame",
    "Headers",
    "OriginPolicy",
    "ServerStats",
    "StartupError",
    "TrustedProxies",
    "ProtocolError",
    "QueryParams",
    "Request",
    "RequestInfo",
    "Subscriber",
    "ValidationError",
    "WebSocketRoute",
    "converter",
    # Scaling out (docs/topics/scaling.rst, docs/topics/deploying.rst).
    "RedisBroker",
    "serve_native_workers",
    "RedisBrokerStats",
    # Client types (the server method's function forms; docs/topics/client-types.rst).
    "TypeGenerationError",
    "generate_asyncapi",
    "generate_json_schema",
    "generate_websocket_types",
    # Rate limits: WebSocketServer(rate_limit=RateLimit(...)).
    "RateLimit",
    # History and recovery (docs/topics/history.rst).
    "History",
    "HistoryPage",
    "HistoryPolicy",
    "Position",
    "Publication",
    "Recovery",
    # Observability (docs/topics/observability.rst): WebSocketServer(metrics=Metrics(...)),
    # server.route_stats, the access log's formatter.
    "Histogram",
    "JSONFormatter",
    "Metrics",
    "RouteStats",
    # Presence (docs/topics/presence.rst).
    "Presence",
    "PresenceEntry",
    "PresenceJoin",
    "PresenceLeave",
    "PresencePolicy",
    "PresenceStats",
    # Tokens that expire (docs/topics/authentication.rst).
    "Authenticated",
}


def _public_names(module: object) -> set[str]:
    # Submodules (``testing``) and pytest's assertion-rewrite helpers are not API.
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith(("_", "@")) and not inspect.ismodule(value)
    }


def test_public_names_are_exactly_the_contract_plus_documented_extras() -> None:
    assert _public_names(trio_wsroutes) == CONTRACT | ALSO_PUBLIC


def test_every_public_name_is_documented() -> None:
    for name in CONTRACT | ALSO_PUBLIC:
        obj = getattr(trio_wsroutes, name)
        if name == "converter":
            continue  # an instance; documented in the module that defines it
        assert inspect.getdoc(obj), f"{name} has no docstring"


def test_public_methods_are_documented() -> None:
    for name in ("WebSocketServer", "WebSocketRoute", "Connection", "ConnectionRegistry"):
        cls = getattr(trio_wsroutes, name)
        for attr, value in vars(cls).items():
            if attr.startswith("_") or (not callable(value) and not isinstance(value, property)):
                continue
            assert inspect.getdoc(value), f"{name}.{attr} has no docstring"


def test_testing_module_surface() -> None:
    assert set(trio_wsroutes.testing.__all__) == {
        "ClientFactory",
        "ClientOptions",
        "ConnectionDenied",
        "RequestTimeout",
        "TestClient",
        "TestConnection",
        "TransportName",
        "WebSocketClosed",
        "live_clients",
    }


def test_client_module_surface() -> None:
    assert set(trio_wsroutes.client.__all__) == {
        "MAX_RESUME_POSITIONS",
        "MAX_RESUME_QUERY_BYTES",
        "Backoff",
        "Client",
        "ClientError",
        "ConnectionDenied",
        "ConnectionLost",
        "DecodeError",
        "HandshakeFailed",
        "Position",
        "ReceiveQueueFull",
        "RecoveryInfo",
        "RequestTimeout",
        "ServerError",
        "WebSocketClosed",
        "connect",
    }
    for name in trio_wsroutes.client.__all__:
        assert hasattr(trio_wsroutes.client, name), name
