"""The "Observability" guide's snippets, served for real on both transports."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
from observability import (
    guarded,
    log_access_as_json,
    logged,
    server,
    slowest_handlers,
    with_site,
)
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

from trio_wsroutes import BoundAddress, WebSocketServer

TRANSPORTS = ["hypercorn", "native"]


@asynccontextmanager
async def serving(ws_server: WebSocketServer, transport: str) -> AsyncIterator[BoundAddress]:
    stop = trio.Event()
    serve = ws_server.serve if transport == "hypercorn" else ws_server.serve_native
    async with trio.open_nursery() as nursery:
        addresses: list[BoundAddress] = await nursery.start(
            functools.partial(serve, "127.0.0.1", 0, shutdown_trigger=stop.wait)
        )
        try:
            yield addresses[0]
        finally:
            stop.set()


async def scrape(url: str, headers: dict[str, str] | None = None) -> dict[tuple[str, ...], float]:
    """Every sample of the exposition at ``url``: (name, label=value...) -> value."""
    async with httpx.AsyncClient() as client:
        answer = await client.get(url, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = tuple(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[(sample.name, *labels)] = sample.value
    return samples


async def chat_once(address: BoundAddress, name: str, text: str) -> None:
    """Connect as ``name`` to /chat/lobby, say ``text``, read it back, close."""
    async with open_websocket_url(f"{address.ws_url}/chat/lobby?name={name}") as ws:
        await ws.send_message(json.dumps({"type": "say", "data": {"text": text}}))
        assert json.loads(await ws.get_message())["type"] == "said"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_metrics_count_messages_by_route_pattern_and_type(transport: str) -> None:
    received = ("trio_wsroutes_messages_received_total", "route=/chat/:room", "type=say")
    opened = ("trio_wsroutes_connections_opened_total", "route=/chat/:room")
    with trio.fail_after(20):
        async with serving(server, transport) as address:
            before = await scrape(f"{address.http_url}/metrics")
            await chat_once(address, "ada", "hi")
            await chat_once(address, "bob", "ho")
            after = await scrape(f"{address.http_url}/metrics")
    assert after[received] - before.get(received, 0) == 2
    assert after[opened] - before.get(opened, 0) == 2
    # The pattern labels the series, never the path, the user or the topic.
    assert not any("lobby" in part or "ada" in part for key in after for part in key)
    assert "trio_wsroutes_handler_duration_seconds_bucket" in {key[0] for key in after}
    assert ("/chat/:room", "say") in {row[:2] for row in slowest_handlers(server.route_stats)}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_authorize_refuses_a_client_the_proxy_reports_as_public(transport: str) -> None:
    with trio.fail_after(20):
        async with serving(guarded, transport) as address, httpx.AsyncClient() as client:
            url = f"{address.http_url}/internal/metrics"
            assert (await client.get(url)).status_code == 200
            public = await client.get(url, headers={"x-forwarded-for": "8.8.8.8"})
            private = await client.get(url, headers={"x-forwarded-for": "10.1.2.3"})
            default_path = await client.get(f"{address.http_url}/metrics")
    assert public.status_code == 403
    assert private.status_code == 200
    assert default_path.status_code == 404
    assert "process_cpu_seconds_total" not in private.text  # process_metrics=False


async def test_metrics_app_mounted_in_starlette() -> None:
    # http_app is served under hypercorn only; the native transport answers Metrics.path.
    # A Starlette Mount serves the paths below its own (/ops/metrics/).
    with trio.fail_after(20):
        async with serving(with_site, "hypercorn") as address:
            await chat_once(address, "ada", "hi")
            mounted = await scrape(f"{address.http_url}/ops/metrics/")
            own = await scrape(f"{address.http_url}/metrics")
            async with httpx.AsyncClient() as client:
                home = await client.get(f"{address.http_url}/")
    key = ("trio_wsroutes_connections_opened_total", "route=/chat/:room")
    assert mounted[key] == own[key] == 1
    assert home.text == "hello"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_access_log_as_json_lines(
    transport: str, capsys: pytest.CaptureFixture[str]
) -> None:
    access = logging.getLogger("trio_wsroutes.access")
    handler = log_access_as_json()
    try:
        with trio.fail_after(20):
            async with serving(logged, transport) as address:
                await chat_once(address, "ada", "hi")
                async with httpx.AsyncClient() as client:
                    await client.get(
                        f"{address.http_url}/nowhere",
                        headers={
                            "connection": "upgrade",
                            "upgrade": "websocket",
                            "sec-websocket-version": "13",
                            "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
                        },
                    )
    finally:
        access.removeHandler(handler)
        access.setLevel(logging.NOTSET)
        access.propagate = True
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line[:1] == "{"]
    closes = [r for r in lines if r.get("event") == "close"]
    denies = [r for r in lines if r.get("event") == "deny"]
    assert len(closes) == 1, lines
    close = closes[0]
    assert close["logger"] == "trio_wsroutes.access"
    assert close["level"] == "INFO"
    assert close["route"] == "/chat/:room"
    assert close["path"] == "/chat/lobby"
    assert close["user_id"] == "acct-ada"
    assert close["client"].startswith("127.0.0.1:")
    assert close["messages_in"] == 1
    assert close["messages_out"] == 1
    # hypercorn reports a client's close frame as 1006 with no code.
    if transport == "native":
        assert (close["close_code"], close["closed_by"]) == (1000, "client")
    else:
        assert (close["close_code"], close["closed_by"]) == (1006, "network")
    assert [(d["route"], d["path"], d["status"], d["code"]) for d in denies] == [
        (None, "/nowhere", 404, "NOT_FOUND")
    ]
