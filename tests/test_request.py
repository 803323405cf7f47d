"""Request: headers, query, cookies, client, origin, as auth functions see them."""

from __future__ import annotations

from typing import Any

import pytest

from trio_wsroutes import Headers, QueryParams, Reject, Request, TrustedProxies
from trio_wsroutes._request import MAX_COOKIE_BYTES, is_token, parse_cookies


def test_headers_are_case_insensitive_and_keep_repeats() -> None:
    headers = Headers([(b"X-Token", b"a"), (b"x-token", b"b"), (b"Origin", b"https://o")])
    assert headers["x-TOKEN"] == "a, b"
    assert headers.get_all("X-Token") == ["a", "b"]
    assert "ORIGIN" in headers
    assert headers.get("missing") is None
    assert len(headers) == 2
    assert headers.raw() == [("x-token", "a"), ("x-token", "b"), ("origin", "https://o")]
    # Every open connection keeps its request: the lookup table may be let go.
    headers._forget_lookups()  # pyright: ignore[reportPrivateUsage]
    assert headers["X-Token"] == "a, b" and list(headers) == ["x-token", "origin"]
    assert repr(headers) == (
        "Headers([('x-token', 'a'), ('x-token', 'b'), ('origin', 'https://o')])"
    )


def test_query_params_last_value_wins_and_all_values_kept() -> None:
    query = QueryParams(b"token=1&tag=a&tag=b&empty=")
    assert query["tag"] == "b"
    assert query.get_all("tag") == ["a", "b"]
    assert query["empty"] == ""
    assert "missing" not in query
    assert repr(QueryParams("a=1")) == "QueryParams([('a', '1')])"
    assert len(QueryParams("")) == 0 and QueryParams("").get_all("a") == []


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


# -- forwarding headers: only the one the trusted proxy appends --------------------------------

PROXY = ("10.0.0.5", 4000)


def resolve(proxies: TrustedProxies, *headers: tuple[str, str]) -> tuple[tuple[str, int], str]:
    raw = [(name.encode(), value.encode()) for name, value in headers]
    return proxies.resolve(PROXY, Headers(raw), "ws")


def test_a_named_header_is_the_only_one_read() -> None:
    xff = TrustedProxies(["10.0.0.0/8"], header="x-forwarded-for")
    both = (
        ("forwarded", "for=203.0.113.9;proto=https"),
        ("x-forwarded-for", "198.51.100.1, 192.0.2.7"),
        ("x-forwarded-proto", "https"),
    )
    assert resolve(xff, *both) == (("192.0.2.7", 0), "wss")
    assert resolve(xff, both[0]) == (PROXY, "ws")  # Forwarded alone: not believed either
    forwarded = TrustedProxies(["10.0.0.0/8"], header="forwarded")
    assert resolve(forwarded, *both) == (("203.0.113.9", 0), "wss")
    assert resolve(forwarded, both[1], both[2]) == (PROXY, "ws")


def test_auto_believes_neither_when_both_are_there(caplog: Any) -> None:
    auto = TrustedProxies(["10.0.0.0/8"])
    assert auto.header == "auto"
    assert resolve(auto, ("forwarded", "for=203.0.113.9")) == (("203.0.113.9", 0), "ws")
    assert resolve(auto, ("x-forwarded-for", "192.0.2.7")) == (("192.0.2.7", 0), "ws")
    with caplog.at_level("WARNING", logger="trio_wsroutes"):
        both = resolve(auto, ("forwarded", "for=203.0.113.9"), ("x-forwarded-for", "192.0.2.7"))
        resolve(auto, ("forwarded", "for=203.0.113.9"), ("x-forwarded-for", "192.0.2.7"))
    assert both == (PROXY, "ws")
    warnings = [r.getMessage() for r in caplog.records if "Forwarded" in r.getMessage()]
    assert len(warnings) <= 1  # once per process


def test_the_scheme_comes_from_the_hops_the_client_cannot_write() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"], header="forwarded")
    # The client wrote the first element, proto included: not believed.
    written = ("forwarded", "for=1.2.3.4;proto=https, for=192.0.2.7")
    assert resolve(proxies, written) == (("192.0.2.7", 0), "ws")
    appended = ("forwarded", "for=1.2.3.4;proto=http, for=192.0.2.7;proto=https, for=10.1.1.1")
    assert resolve(proxies, appended) == (("192.0.2.7", 0), "wss")


def test_trusted_proxies_copy_and_iterate() -> None:
    named = TrustedProxies(["10.0.0.0/8", "*"], header="forwarded")
    assert list(named) == ["10.0.0.0/8", "*"]
    copy = TrustedProxies(named)  # what the server does with its option
    assert copy.header == "forwarded"
    assert list(copy) == ["10.0.0.0/8", "*"]
    assert TrustedProxies(named, header="auto").header == "auto"
    with pytest.raises(ValueError, match="header is"):
        TrustedProxies([], header="x-real-ip")  # type: ignore[arg-type]


# -- cookies: a linear parser with a length cap --------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("a=1; b=2", {"a": "1", "b": "2"}),
        ("a=1;b=2;", {"a": "1", "b": "2"}),
        ('  a = "quoted value" ; b=', {"a": "quoted value", "b": ""}),
        ("a=x=y", {"a": "x=y"}),
        ("a=1; a=2", {"a": "1"}),  # the first wins (the longer path comes first)
        ('bad"name=1; ok=2', {"ok": "2"}),  # one bad pair loses only itself
        ("novalue; =nameless; ok=3", {"ok": "3"}),
        ('a="\\\\\\""', {"a": '\\\\\\"'}),  # no escapes: RFC 6265 has none
        ("path=/; expires=x", {"path": "/", "expires": "x"}),  # names, not attributes
        ("é=1; a b=2; c\x01=3; d=4", {"d": "4"}),
    ],
)
def test_parse_cookies(header: str, expected: dict[str, str]) -> None:
    assert parse_cookies(header) == expected


def test_cookies_over_the_cap_give_none() -> None:
    def cookies(*values: str) -> dict[str, str]:
        scope = {"path": "/", "headers": [(b"cookie", v.encode()) for v in values]}
        return dict(Request.from_scope(scope).cookies)

    fits = "a=" + "x" * (MAX_COOKIE_BYTES - 2)
    assert cookies(fits) == {"a": "x" * (MAX_COOKIE_BYTES - 2)}
    assert cookies(fits + "x") == {}
    half = "b=" + "y" * (MAX_COOKIE_BYTES // 2)
    assert cookies(half, half) == {}  # the cap is on every Cookie header together
    assert cookies("a=1", "b=2; a=3") == {"a": "1", "b": "2"}


# -- HTTP tokens: one definition for header and cookie names -------------------------------------

# RFC 9110, section 5.6.2, spelled out as the RFC does.
TCHAR = (
    set("!#$%&'*+-.^_`|~")
    | {chr(c) for c in range(0x30, 0x3A)}
    | {chr(c) for c in [*range(0x41, 0x5B), *range(0x61, 0x7B)]}
)


@pytest.mark.parametrize(
    "char", [chr(c) for c in range(0x100)] + ["\u0131", "\u212a", "\U0001d7d9"]
)
def test_a_token_is_made_of_rfc_9110_tchars(char: str) -> None:
    assert is_token(char) is (char in TCHAR)
    assert is_token(f"a{char}b") is (char in TCHAR)


def test_a_token_is_a_non_empty_string() -> None:
    assert not is_token("")
    assert not is_token(None)
    assert not is_token(b"abc")
    assert is_token("X-Request-Id")


@pytest.mark.parametrize("char", [chr(c) for c in range(0x80)])
def test_cookie_names_and_reject_header_names_follow_the_same_rule(char: str) -> None:
    name = f"n{char}n"
    cookie_kept = parse_cookies(f"{name}=1") == {name: "1"}
    try:
        Reject(429, "Slow down", "RATE", headers={name: "1"})
    except ValueError:
        header_kept = False
    else:
        header_kept = True
    assert cookie_kept is header_kept is (char in TCHAR)
