"""A minimal real HTTP/1.1 client over trio sockets, for tests against live servers."""

from __future__ import annotations

import attrs
import h11
import trio

from trio_wsroutes import BoundAddress


@attrs.frozen
class HTTPResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers if k == wanted), None)


async def http_request(
    address: BoundAddress,
    method: str,
    path: str,
    headers: list[tuple[str, str]] | None = None,
    timeout: float = 10,
) -> HTTPResponse:
    """Send one request with ``Connection: close`` and read the whole response."""
    client = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method=method,
        target=path,
        headers=[
            ("Host", f"{address.host}:{address.port}"),
            ("Connection", "close"),
            ("Content-Length", "0"),
            *(headers or []),
        ],
    )
    status = 0
    response_headers: list[tuple[str, str]] = []
    body = bytearray()
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with stream:
            await stream.send_all(client.send(request) + client.send(h11.EndOfMessage()))
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(await stream.receive_some())
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    response_headers = [
                        (k.decode().lower(), v.decode("latin-1")) for k, v in event.headers
                    ]
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
    return HTTPResponse(status, response_headers, bytes(body))
