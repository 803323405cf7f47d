"""Route settings resolved once: the heartbeat that applies on a transport, and the
subprotocol a route answers with."""

from __future__ import annotations

from typing import Any

import pytest

from trio_wsroutes import create_websocket_route
from trio_wsroutes._routes import ServerDefaults, WebSocketRoute, resolve_route
from trio_wsroutes._spec import EngineOptions, Heartbeat, choose_subprotocol, resolve_heartbeat


def resolved(
    route: WebSocketRoute[Any, Any], interval: float | None = 20.0, timeout: float = 20.0
) -> Any:
    defaults = ServerDefaults(
        options=EngineOptions(), heartbeat_interval=interval, heartbeat_timeout=timeout
    )
    return resolve_route(route, defaults)


# -- the heartbeat ------------------------------------------------------------------------


def test_the_server_pings_when_the_route_has_no_heartbeat_of_its_own() -> None:
    assert resolve_heartbeat(None, 5.0, 7.0) == Heartbeat(5.0, 7.0, envelope=False)
    assert resolve_heartbeat(None, None, 7.0) is None


def test_the_route_envelope_heartbeat_wins_over_the_server_pings() -> None:
    own = Heartbeat(1.0, 2.0, envelope=True)
    assert resolve_heartbeat(own, 5.0, 7.0) is own
    assert resolve_heartbeat(own, None, 7.0) is own


def test_pings_apply_only_on_a_transport_that_can_send_them() -> None:
    spec = resolved(create_websocket_route("/pings"), interval=5.0, timeout=7.0)
    assert spec.heartbeat_on(can_ping=True) == Heartbeat(5.0, 7.0)
    assert spec.heartbeat_on(can_ping=False) is None  # hypercorn pings by itself


def test_an_envelope_heartbeat_applies_on_every_transport() -> None:
    route = create_websocket_route("/envelope").heartbeat(3.0, timeout=4.0)
    spec = resolved(route, interval=5.0)
    for can_ping in (True, False):
        assert spec.heartbeat_on(can_ping) == Heartbeat(3.0, 4.0, envelope=True)


def test_no_heartbeat_when_the_server_turns_pings_off() -> None:
    spec = resolved(create_websocket_route("/quiet"), interval=None)
    assert spec.heartbeat_on(can_ping=True) is None
    assert spec.heartbeat_on(can_ping=False) is None


# -- the subprotocol ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("supported", "offered", "chosen"),
    [
        (("v2", "v1"), ["v1", "v2"], "v2"),  # the route's preference, not the client's
        (("v2", "v1"), ["v1"], "v1"),
        (("v2", "v1"), ["v3"], None),
        (("v2", "v1"), [], None),
        ((), ["v1"], None),
        (("V1",), ["v1"], None),  # subprotocol names are case-sensitive
    ],
)
def test_the_route_answers_with_its_most_preferred_offered_subprotocol(
    supported: tuple[str, ...], offered: list[str], chosen: str | None
) -> None:
    assert choose_subprotocol(supported, offered) == chosen


def test_the_route_and_its_spec_choose_alike() -> None:
    route = create_websocket_route("/sub").subprotocols("v2", "v1", required=False)
    spec = resolved(route)
    for offered in (["v1", "v2"], ["v1"], ["x"], []):
        assert route.select_subprotocol(offered) == spec.select_subprotocol(tuple(offered))
        assert route.select_subprotocol(iter(offered)) == choose_subprotocol(("v2", "v1"), offered)
