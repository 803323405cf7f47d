"""Request: headers, query, cookies, client, origin, as auth functions see them."""

from __future__ import annotations

from trio_wsroutes import Headers, QueryParams, Request


def test_headers_are_case_insensitive_and_keep_repeats() -> None:
    headers = Headers([(b"X-Token", b"a"), (b"x-token", b"b"), (b"Origin", b"https://o")])
    assert headers["x-TOKEN"] == "a, b"
    assert headers.get_all("X-Token") == ["a", "b"]
    assert "ORIGIN" in headers
    assert headers.get("missing") is None
    assert len(headers) == 2


def test_query_params_last_value_wins_and_all_values_kept() -> None:
    query = QueryParams(b"token=1&tag=a&tag=b&empty=")
    assert query["tag"] == "b"
    assert query.get_all("tag") == ["a", "b"]
    assert query["empty"] == ""
    assert "missing" not in query


def test_request_from_scope() -> None:
    scope = {
        "type": "websocket",
        "path": "/chat/general",
        "query_string": b"token=abc",
        "headers": [
            (b"host", b"example.com"),
            (b"origin", b"https://example.com"),
            (b"user-agent", b"test-agent"),
            (b"cookie", b"session=s1; theme=dark"),
        ],
        "client": ("10.0.0.1", 5555),
        "scheme": "wss",
        "subprotocols": ["chat.v2", "chat.v1"],
    }
    request = Request.from_scope(scope, {"room": "general"})
    assert request.path == "/chat/general"
    assert request.query["token"] == "abc"
    assert request.path_params == {"room": "general"}
    assert request.client == ("10.0.0.1", 5555)
    assert request.origin == "https://example.com"
    assert request.user_agent == "test-agent"
    assert request.cookies == {"session": "s1", "theme": "dark"}
    assert request.subprotocols == ("chat.v2", "chat.v1")
    assert request.url == "wss://example.com/chat/general?token=abc"


def test_malformed_cookie_header_gives_no_cookies() -> None:
    scope = {"path": "/", "headers": [(b"cookie", b'bad"cookie=\\x')]}
    assert dict(Request.from_scope(scope, {}).cookies) == {}
