"""Token helpers and authenticate functions."""

from __future__ import annotations

import attrs
import pytest

from trio_wsroutes import (
    Headers,
    Reject,
    Request,
    RequestInfo,
    create_token_auth,
    extract_bearer_token,
    extract_cookie_token,
    extract_query_token,
    extract_request_info,
    extract_token,
    no_auth,
)


def make_request(headers: dict[str, str] | None = None, query: str = "") -> Request:
    return Request(
        path="/",
        headers=Headers((k, v) for k, v in (headers or {}).items()),
        query_string=query,
        client=("127.0.0.1", 1234),
    )


@attrs.frozen
class User:
    id: str


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer ", None),
    ],
)
def test_extract_bearer_token(header: str, expected: str | None) -> None:
    assert extract_bearer_token(make_request({"Authorization": header})) == expected


def test_extract_query_and_cookie_tokens() -> None:
    request = make_request({"cookie": "token=c1"}, "token=q1&auth=q2")
    assert extract_query_token(request) == "q1"
    assert extract_query_token(request, "auth") == "q2"
    assert extract_query_token(make_request(query="token=")) is None
    assert extract_cookie_token(request) == "c1"


def test_extract_token_prefers_header_then_query_then_cookie() -> None:
    both = make_request({"authorization": "Bearer h", "cookie": "token=c"}, "token=q")
    assert extract_token(both) == "h"
    assert extract_token(both, check_header=False) == "q"
    assert extract_token(both, check_header=False, check_query=False, cookie_name="token") == "c"
    assert extract_token(make_request()) is None


async def test_create_token_auth_with_sync_and_async_verifiers() -> None:
    def verify(token: str) -> User | None:
        return User(token) if token == "good" else None

    async def averify(token: str) -> User | None:
        return verify(token)

    for auth in (create_token_auth(verify), create_token_auth(averify)):
        assert await auth(make_request({"authorization": "Bearer good"})) == User("good")
        assert await auth(make_request({"authorization": "Bearer bad"})) is None
        assert await auth(make_request()) is None

    query_only = create_token_auth(verify, check_header=False, query_param_name="t")
    assert await query_only(make_request({"authorization": "Bearer good"})) is None
    assert await query_only(make_request(query="t=good")) == User("good")


def test_request_info_and_no_auth() -> None:
    request = make_request({"origin": "https://o", "user-agent": "ua"})
    expected = RequestInfo(ip="127.0.0.1", origin="https://o", user_agent="ua")
    assert extract_request_info()(request) == expected
    assert no_auth(request) == expected


def test_reject_needs_an_error_status() -> None:
    assert Reject(429, "Slow down", "RATE").status == 429
    with pytest.raises(ValueError, match="400-599"):
        Reject(200)
