"""The upgrade request, as authenticate functions and handlers see it."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["Headers", "QueryParams", "Request", "TrustedProxies"]


class Headers(Mapping[str, str]):
    """Request headers: case-insensitive, read-only; a repeated header joins with ``", "``.

    ``get_all(name)`` returns every value of a repeated header.
    """

    __slots__ = ("_items", "_joined")

    def __init__(self, raw: Iterable[tuple[bytes | str, bytes | str]] = ()) -> None:
        items: list[tuple[str, str]] = []
        for name, value in raw:
            key = name.decode("latin-1") if isinstance(name, bytes) else name
            val = value.decode("latin-1") if isinstance(value, bytes) else value
            items.append((key.lower(), val))
        self._items = items
        joined: dict[str, str] = {}
        for key, val in items:
            joined[key] = f"{joined[key]}, {val}" if key in joined else val
        self._joined = joined

    def __getitem__(self, name: str) -> str:
        return self._joined[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._joined

    def __iter__(self) -> Iterator[str]:
        return iter(self._joined)

    def __len__(self) -> int:
        return len(self._joined)

    def get_all(self, name: str) -> list[str]:
        """Every value sent for ``name``, in order."""
        key = name.lower()
        return [val for k, val in self._items if k == key]

    def raw(self) -> list[tuple[str, str]]:
        """All headers in order, names lower-cased."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class QueryParams(Mapping[str, str]):
    """Query string parameters; a repeated key maps to its last value.

    ``get_all(name)`` returns every value of a repeated key.
    """

    __slots__ = ("_items", "_last")

    def __init__(self, query_string: bytes | str = b"") -> None:
        text = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
        self._items = parse_qsl(text, keep_blank_values=True)
        self._last = dict(self._items)

    def __getitem__(self, name: str) -> str:
        return self._last[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._last)

    def __len__(self) -> int:
        return len(self._last)

    def get_all(self, name: str) -> list[str]:
        """Every value sent for ``name``, in order."""
        return [val for key, val in self._items if key == name]

    def __repr__(self) -> str:
        return f"QueryParams({self._items!r})"


class TrustedProxies:
    """The proxies whose forwarding headers are believed (server option ``trusted_proxies``).

    Entries are IP addresses or networks (``"10.0.0.0/8"``), or ``"*"`` for any peer
    (only when nothing but the proxy can reach the server). The client is the right-most
    address in the forwarding chain that is not itself a trusted proxy: a client can put
    anything in the header it sends, but not to the right of what its proxy appends.
    """

    __slots__ = ("_any", "_networks")

    def __init__(self, proxies: Iterable[str]) -> None:
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._any = False
        for entry in proxies:
            if entry == "*":
                self._any = True
            else:
                networks.append(ipaddress.ip_network(entry, strict=False))
        self._networks = tuple(networks)

    def trusts(self, host: str) -> bool:
        """Whether ``host`` is a trusted proxy."""
        if self._any:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    def apply(self, request: Request) -> None:
        """Set ``request.client`` and ``request.scheme`` from the forwarding headers, if
        the socket peer is a trusted proxy (else leave them as the socket gave them)."""
        peer = request.peer
        if peer is not None and self.trusts(peer[0]):
            request.client, request.scheme = self.resolve(peer, request.headers, request.scheme)

    def resolve(
        self, peer: tuple[str, int], headers: Headers, scheme: str
    ) -> tuple[tuple[str, int], str]:
        """The client address and scheme behind a trusted ``peer``."""
        chain, proto = _forwarded_chain(headers)
        client = peer
        for host in reversed(chain):
            client = (host, 0)
            if not self.trusts(host):
                break
        if proto in ("https", "wss"):
            scheme = "wss"
        elif proto in ("http", "ws"):
            scheme = "ws"
        return client, scheme


def _forwarded_chain(headers: Headers) -> tuple[list[str], str | None]:
    """Hosts from ``Forwarded`` (RFC 7239) or else ``X-Forwarded-For``, in order, and the
    last forwarded protocol."""
    forwarded = headers.get("forwarded")
    if forwarded:
        hosts: list[str] = []
        proto: str | None = None
        for element in forwarded.split(","):
            for pair in element.split(";"):
                key, _, value = pair.strip().partition("=")
                value = value.strip().strip('"')
                if key.lower() == "for" and value:
                    hosts.append(_strip_port(value))
                elif key.lower() == "proto" and value:
                    proto = value.lower()
        return hosts, proto
    hosts = [h.strip() for h in headers.get("x-forwarded-for", "").split(",") if h.strip()]
    proto_header = headers.get("x-forwarded-proto")
    return hosts, proto_header.split(",")[-1].strip().lower() if proto_header else None


def _strip_port(value: str) -> str:
    if value.startswith("["):  # [2001:db8::1]:4711
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:  # 192.0.2.60:4711
        return value.split(":", 1)[0]
    return value


class Request:
    """The HTTP upgrade request of a WebSocket connection.

    Available to ``authenticate`` functions (before the upgrade is accepted) and to
    handlers as ``ctx.request``.
    """

    __slots__ = (
        "_cookies",
        "client",
        "headers",
        "path",
        "path_params",
        "peer",
        "query",
        "query_string",
        "scheme",
        "subprotocols",
    )

    def __init__(
        self,
        *,
        path: str,
        headers: Headers,
        query_string: str = "",
        path_params: Mapping[str, str] | None = None,
        client: tuple[str, int] | None = None,
        scheme: str = "ws",
        subprotocols: Iterable[str] = (),
        peer: tuple[str, int] | None = None,
    ) -> None:
        self.path: str = path
        """The request path, percent-decoded (``/chat/general``)."""
        self.headers: Headers = headers
        """Case-insensitive request headers."""
        self.query_string: str = query_string
        """The raw query string, without ``?``."""
        self.query: QueryParams = QueryParams(query_string)
        """Parsed query parameters."""
        self.path_params: Mapping[str, str] = dict(path_params or {})
        """Values of the route's path parameters (``{"room": "general"}``)."""
        self.client: tuple[str, int] | None = client
        """The client's ``(host, port)``: the socket peer, or, behind a trusted proxy, the
        address the proxy reports (port 0 when it reports none)."""
        self.peer: tuple[str, int] | None = peer if peer is not None else client
        """The socket peer's ``(host, port)``, which is the proxy when there is one."""
        self.scheme: str = scheme
        """``ws`` or ``wss``."""
        self.subprotocols: tuple[str, ...] = tuple(subprotocols)
        """Subprotocols the client offered, in its order of preference."""
        self._cookies: dict[str, str] | None = None

    @classmethod
    def from_scope(
        cls,
        scope: Mapping[str, Any],
        path_params: Mapping[str, str] | None = None,
        trusted_proxies: TrustedProxies | None = None,
    ) -> Request:
        """Build a request from an ASGI WebSocket scope.

        With ``trusted_proxies``, a peer among them has its ``Forwarded`` (or
        ``X-Forwarded-For`` / ``X-Forwarded-Proto``) headers believed for the client
        address and scheme; any other peer's are ignored.
        """
        raw_peer = scope.get("client")
        peer = (str(raw_peer[0]), int(raw_peer[1])) if raw_peer else None
        headers = Headers(scope.get("headers", ()))
        scheme = str(scope.get("scheme", "ws"))
        request = cls(
            path=scope.get("path", "/"),
            headers=headers,
            query_string=scope.get("query_string", b"").decode("latin-1"),
            path_params=path_params,
            client=peer,
            scheme=scheme,
            subprotocols=scope.get("subprotocols", ()),
            peer=peer,
        )
        if trusted_proxies is not None:
            trusted_proxies.apply(request)
        return request

    @property
    def cookies(self) -> Mapping[str, str]:
        """Cookies sent with the upgrade; a malformed ``Cookie`` header gives none."""
        if self._cookies is None:
            jar: dict[str, str] = {}
            for header in self.headers.get_all("cookie"):
                parsed = SimpleCookie()
                try:
                    parsed.load(header)
                except CookieError:
                    continue
                jar.update({name: morsel.value for name, morsel in parsed.items()})
            self._cookies = jar
        return self._cookies

    @property
    def origin(self) -> str | None:
        """The ``Origin`` header, which browsers always send on a WebSocket upgrade."""
        return self.headers.get("origin")

    @property
    def user_agent(self) -> str | None:
        """The ``User-Agent`` header."""
        return self.headers.get("user-agent")

    @property
    def url(self) -> str:
        """The request URL as the client addressed it (from the ``Host`` header)."""
        host = self.headers.get("host", "")
        query = f"?{self.query_string}" if self.query_string else ""
        return f"{self.scheme}://{host}{self.path}{query}"

    def __repr__(self) -> str:
        return f"<Request {self.path!r} from {self.client!r}>"
