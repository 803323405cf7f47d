"""The upgrade request, as authenticate functions and handlers see it."""

from __future__ import annotations

import ipaddress
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

__all__ = [
    "MAX_COOKIE_BYTES",
    "ForwardingHeader",
    "Headers",
    "QueryParams",
    "Request",
    "TrustedProxies",
    "is_token",
    "parse_cookies",
]

logger = logging.getLogger("trio_wsroutes")

ForwardingHeader = Literal["auto", "forwarded", "x-forwarded-for"]
"""The header trusted proxies append the client's address to (:class:`TrustedProxies`)."""


class Headers(Mapping[str, str]):
    """Request headers: case-insensitive, read-only; a repeated header joins with ``", "``.

    ``get_all(name)`` returns every value of a repeated header.
    """

    # Names and values in one flat tuple, the names lower-cased and interned (shared by
    # every request); the lookup table is made on the first lookup and may be let go
    # (``_forget_lookups``): every open connection keeps its request.
    __slots__ = ("_items", "_joined")

    def __init__(self, raw: Iterable[tuple[bytes | str, bytes | str]] = ()) -> None:
        items: list[str] = []
        for name, value in raw:
            key = name.decode("latin-1") if isinstance(name, bytes) else name
            val = value.decode("latin-1") if isinstance(value, bytes) else value
            items.append(sys.intern(key.lower()))
            items.append(val)
        self._items: tuple[str, ...] = tuple(items)
        self._joined: dict[str, str] | None = None

    def _lookups(self) -> dict[str, str]:
        joined = self._joined
        if joined is None:
            joined = {}
            items = self._items
            for i in range(0, len(items), 2):
                key, val = items[i], items[i + 1]
                joined[key] = f"{joined[key]}, {val}" if key in joined else val
            self._joined = joined
        return joined

    def _forget_lookups(self) -> None:
        """Let the lookup table go (made again if needed)."""
        self._joined = None

    def __getitem__(self, name: str) -> str:
        return self._lookups()[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookups()

    def __iter__(self) -> Iterator[str]:
        return iter(self._lookups())

    def __len__(self) -> int:
        return len(self._lookups())

    def get_all(self, name: str) -> list[str]:
        """Every value sent for ``name``, in order."""
        key = name.lower()
        items = self._items
        return [items[i + 1] for i in range(0, len(items), 2) if items[i] == key]

    def raw(self) -> list[tuple[str, str]]:
        """All headers in order, names lower-cased."""
        items = self._items
        return list(zip(items[0::2], items[1::2], strict=True))

    def __repr__(self) -> str:
        return f"Headers({self.raw()!r})"


class QueryParams(Mapping[str, str]):
    """Query string parameters; a repeated key maps to its last value.

    ``get_all(name)`` returns every value of a repeated key.
    """

    # A tuple (none at all for an empty query) and a lookup table made when first
    # needed: every open connection keeps its request.
    __slots__ = ("_items", "_last")

    def __init__(self, query_string: bytes | str = b"") -> None:
        text = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
        self._items: tuple[tuple[str, str], ...] = (
            tuple(parse_qsl(text, keep_blank_values=True)) if text else ()
        )
        self._last: dict[str, str] | None = None

    def _lookups(self) -> dict[str, str]:
        last = self._last
        if last is None:
            last = self._last = dict(self._items)
        return last

    def __getitem__(self, name: str) -> str:
        return self._lookups()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._lookups())

    def __len__(self) -> int:
        return len(self._lookups())

    def get_all(self, name: str) -> list[str]:
        """Every value sent for ``name``, in order."""
        return [val for key, val in self._items if key == name]

    def __repr__(self) -> str:
        return f"QueryParams({list(self._items)!r})"


class TrustedProxies:
    """The proxies whose forwarding headers are believed (server option ``trusted_proxies``).

    Entries are IP addresses or networks (``"10.0.0.0/8"``), or ``"*"`` for any peer
    (only when nothing but the proxy can reach the server). Only a request whose socket
    peer is one of them has its forwarding headers read at all.

    **Which header.** A proxy appends the address it received the request from to *one*
    header and passes the others on as the client wrote them. ``header`` names that
    header, so that the client cannot choose its address with another one:

    * ``"x-forwarded-for"``: ``X-Forwarded-For`` gives the client and
      ``X-Forwarded-Proto`` the scheme; ``Forwarded`` is ignored (nginx with
      ``$proxy_add_x_forwarded_for``, HAProxy ``option forwardfor``, AWS ALB, Caddy,
      Traefik, Envoy).
    * ``"forwarded"``: ``Forwarded`` (RFC 7239) gives both; ``X-Forwarded-*`` is ignored
      (HAProxy ``option forwarded``, proxies configured for RFC 7239).
    * ``"auto"`` (default): whichever of ``Forwarded`` and ``X-Forwarded-For`` the
      request carries. A request that carries **both** has one written by the client and
      nothing says which, so neither is believed: ``request.client`` is the proxy itself
      (and a warning is logged once). Name the header to avoid that.

    **Which address.** In that header the client is the right-most address that is not
    itself a trusted proxy: a client can write anything into the header it sends, but
    not to the right of what its proxy appends. The scheme comes from the same hops: the
    ``proto`` of the ``Forwarded`` elements from the right-most up to the one naming the
    client (of those that have one, the nearest the client; a ``proto`` the client wrote
    into an earlier element is not believed), or the right-most ``X-Forwarded-Proto``
    value, which can be believed only if your proxy sets it, replacing what the client
    sent (nginx: ``proxy_set_header X-Forwarded-Proto $scheme``).

    ``TrustedProxies(["10.0.0.0/8"], header="x-forwarded-for")`` can be given as the
    server's ``trusted_proxies``.
    """

    __slots__ = ("_any", "_entries", "_networks", "header")

    def __init__(
        self,
        proxies: Iterable[str] | TrustedProxies,
        *,
        header: ForwardingHeader | None = None,
    ) -> None:
        if isinstance(proxies, TrustedProxies):  # a copy: the server's option takes both
            entries = proxies._entries
            header = proxies.header if header is None else header
        else:
            entries = tuple(proxies)
        if header is None:
            header = "auto"
        if header not in ("auto", "forwarded", "x-forwarded-for"):
            raise ValueError('header is "auto", "forwarded" or "x-forwarded-for"')
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._any = False
        for entry in entries:
            if entry == "*":
                self._any = True
            else:
                networks.append(ipaddress.ip_network(entry, strict=False))
        self._entries: tuple[str, ...] = entries
        self._networks = tuple(networks)
        self.header: ForwardingHeader = header
        """The header the trusted proxies append to (see the class documentation)."""

    def __iter__(self) -> Iterator[str]:
        """The entries, as given."""
        return iter(self._entries)

    def __repr__(self) -> str:
        return f"TrustedProxies({list(self._entries)!r}, header={self.header!r})"

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
        chain, proto = self._chain(headers)
        client = peer
        for host, element_proto in reversed(chain):
            client = (host, 0)
            if element_proto is not None:
                proto = element_proto
            if not self.trusts(host):
                break
        if proto in ("https", "wss"):
            scheme = "wss"
        elif proto in ("http", "ws"):
            scheme = "ws"
        return client, scheme

    def _chain(self, headers: Headers) -> tuple[list[tuple[str, str | None]], str | None]:
        """The hosts of the header the proxies appended to, in order, each with the
        ``proto`` of its ``Forwarded`` element, and the ``X-Forwarded-Proto``."""
        header = self.header
        if header == "auto":
            has_forwarded = "forwarded" in headers
            if has_forwarded and "x-forwarded-for" in headers:
                _warn_once(
                    "a request from a trusted proxy carries both Forwarded and "
                    "X-Forwarded-For: neither is believed (request.client is the proxy); "
                    "name the header your proxy appends: TrustedProxies([...], "
                    'header="x-forwarded-for") or header="forwarded"'
                )
                return [], None
            header = "forwarded" if has_forwarded else "x-forwarded-for"
        if header == "forwarded":
            return _forwarded(headers.get("forwarded", "")), None
        return _x_forwarded(headers)


_warned: set[str] = set()


def _warn_once(text: str) -> None:
    if text not in _warned:
        _warned.add(text)
        logger.warning("%s", text)


def _forwarded(value: str) -> list[tuple[str, str | None]]:
    """The elements of an RFC 7239 ``Forwarded`` value that name a host (``for``), in
    order, each with its ``proto``."""
    chain: list[tuple[str, str | None]] = []
    for element in value.split(","):
        host: str | None = None
        proto: str | None = None
        for pair in element.split(";"):
            key, _, item = pair.strip().partition("=")
            item = item.strip().strip('"')
            if key.lower() == "for" and item:
                host = _strip_port(item)
            elif key.lower() == "proto" and item:
                proto = item.lower()
        if host is not None:
            chain.append((host, proto))
    return chain


def _x_forwarded(headers: Headers) -> tuple[list[tuple[str, str | None]], str | None]:
    hosts = [h.strip() for h in headers.get("x-forwarded-for", "").split(",") if h.strip()]
    proto_header = headers.get("x-forwarded-proto")
    proto = proto_header.split(",")[-1].strip().lower() if proto_header else None
    return [(host, None) for host in hosts], proto


def _strip_port(value: str) -> str:
    if value.startswith("["):  # [2001:db8::1]:4711
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:  # 192.0.2.60:4711
        return value.split(":", 1)[0]
    return value


MAX_COOKIE_BYTES: Final = 8192
"""``Cookie`` headers longer than this, together, give no cookies (nginx's default limit
for one header line is the same 8 KiB)."""

_TCHAR: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


def is_token(value: object) -> bool:
    """Whether ``value`` is an HTTP token (RFC 9110, section 5.6.2): one or more
    ``tchar``, that is ASCII letters, digits and ``!#$%&'*+-.^_`|~``. Header names are
    tokens, and so are cookie names (RFC 6265)."""
    return isinstance(value, str) and value != "" and _TCHAR.issuperset(value)


def parse_cookies(header: str, into: dict[str, str] | None = None) -> dict[str, str]:
    """The cookies of one ``Cookie`` header (RFC 6265, section 5.4), in linear time.

    Pairs are separated by ``;``, a name from its value by the first ``=``; spaces and
    tabs around both are dropped, and a value in double quotes loses them (no escapes are
    interpreted: RFC 6265 has none). A pair whose name is not a token is skipped, the
    others are kept. The first of two cookies with one name wins (browsers send the one
    with the longer path first); with ``into``, names already there are kept.

    ``http.cookies.SimpleCookie`` is not used: on Python 3.11 it is quadratic on
    backslashes (15 KB took 0.8 s), and one pair it cannot read loses the whole header.
    """
    jar: dict[str, str] = {} if into is None else into
    for pair in header.split(";"):
        name, eq, value = pair.partition("=")
        name = name.strip(" \t")
        if not eq or not name or name in jar or not is_token(name):
            continue
        value = value.strip(" \t")
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            value = value[1:-1]
        jar[name] = value
    return jar


class Request:
    """The HTTP upgrade request of a WebSocket connection.

    Available to ``authenticate`` functions (before the upgrade is accepted) and to
    handlers as ``ctx.request``.
    """

    __slots__ = (
        "_cookies",
        "client",
        "cookies_read",
        "headers",
        "method",
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
        method: str = "GET",
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
        self.method: str = method
        """The HTTP method: ``GET`` for every upgrade; a plain HTTP request the server
        answers itself (the metrics, the admin page) may be ``HEAD`` or another."""
        self.scheme: str = scheme
        """``ws`` or ``wss``."""
        self.subprotocols: tuple[str, ...] = tuple(subprotocols)
        """Subprotocols the client offered, in its order of preference."""
        self._cookies: dict[str, str] | None = None
        self.cookies_read: bool = False
        """Whether anything has read :attr:`cookies` (the ``authenticate`` function, say):
        the server then refuses a foreign ``Origin`` unless an origin policy is set."""

    @classmethod
    def from_scope(
        cls,
        scope: Mapping[str, Any],
        path_params: Mapping[str, str] | None = None,
        trusted_proxies: TrustedProxies | None = None,
    ) -> Request:
        """Build a request from an ASGI WebSocket (or HTTP) scope.

        With ``trusted_proxies``, a peer among them has the forwarding header its
        proxies append (see :class:`TrustedProxies`) believed for the client address and
        scheme; any other peer's are ignored.
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
            method=str(scope.get("method", "GET")),
        )
        if trusted_proxies is not None:
            trusted_proxies.apply(request)
        return request

    @property
    def cookies(self) -> Mapping[str, str]:
        """Cookies sent with the upgrade, parsed by :func:`parse_cookies` (the first of
        two with one name wins; a malformed pair is skipped). ``Cookie`` headers over
        :data:`MAX_COOKIE_BYTES` together give none."""
        self.cookies_read = True
        if self._cookies is None:
            jar: dict[str, str] = {}
            headers = self.headers.get_all("cookie")
            if sum(len(header) for header in headers) <= MAX_COOKIE_BYTES:
                for header in headers:
                    parse_cookies(header, jar)
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
