"""Origin checks against cross-site WebSocket hijacking."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["OriginPolicy", "same_origin"]


class OriginPolicy:
    """Which ``Origin`` headers may open a WebSocket.

    Browsers send ``Origin`` on every WebSocket upgrade and let any page open a WebSocket
    to any host, with the user's cookies: without this check, a hostile page can act as
    the user (cross-site WebSocket hijacking). Entries are exact origins
    (``https://app.example.com``), ``*.``-wildcards for subdomains
    (``https://*.example.com``), ``"self"`` for the server's own origin (the host the
    request was sent to, from its ``Host`` header: pages the server itself serves), or
    ``"*"`` for any. A request without ``Origin`` comes from a non-browser client, which
    cannot be hijacked this way, and is allowed unless ``require=True``.
    """

    __slots__ = ("_exact", "_patterns", "any", "own", "require")

    def __init__(self, origins: Iterable[str], *, require: bool = False) -> None:
        exact: set[str] = set()
        patterns: list[re.Pattern[str]] = []
        self.any: bool = False
        self.own: bool = False
        """Whether ``"self"`` is an entry: the server's own origin is allowed."""
        for origin in origins:
            if not isinstance(origin, str) or not origin:
                raise TypeError(f"allowed origins are strings, got {origin!r}")
            normalized = origin.strip().rstrip("/").lower()
            if normalized == "*":
                self.any = True
            elif normalized == "self":
                self.own = True
            elif "*" in normalized:
                scheme, sep, host = normalized.partition("://")
                if not sep or not host.startswith("*.") or "*" in host[2:]:
                    raise ValueError(f"bad origin pattern {origin!r}: use 'https://*.example.com'")
                suffix = re.escape(host[1:])
                label = r"[a-z0-9-]+(?:\.[a-z0-9-]+)*"
                patterns.append(re.compile(rf"{re.escape(scheme)}://{label}{suffix}(?::\d+)?"))
            else:
                exact.add(normalized)
        self._exact = frozenset(exact)
        self._patterns = tuple(patterns)
        self.require: bool = require

    def allows(self, origin: str | None, host: str | None = None) -> bool:
        """Whether a request with this ``Origin`` header (or none) may connect; ``host``
        is its ``Host`` header, for the ``"self"`` entry."""
        if origin is None:
            return not self.require
        normalized = origin.strip().rstrip("/").lower()
        if self.any or normalized in self._exact:
            return True
        if self.own and same_origin(normalized, host):
            return True
        return any(pattern.fullmatch(normalized) for pattern in self._patterns)

    def __repr__(self) -> str:
        shown = ["*"] if self.any else sorted(self._exact) + [p.pattern for p in self._patterns]
        shown = ["self", *shown] if self.own else shown
        return f"OriginPolicy({shown!r}, require={self.require})"


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def same_origin(origin: str, host: str | None) -> bool:
    """Whether ``origin`` (a browser's ``Origin`` header) names the server the request
    was sent to (its ``Host`` header): the same host and port, a missing port being the
    default one of the origin's scheme."""
    scheme, sep, rest = origin.strip().lower().partition("://")
    if not sep or not host:
        return False
    origin_host, origin_port = _split_host(rest.rstrip("/"), _DEFAULT_PORTS.get(scheme))
    request_host, request_port = _split_host(host.strip().lower(), None)
    if origin_host != request_host:
        return False
    return request_port is None or request_port == origin_port


def _split_host(netloc: str, default_port: int | None) -> tuple[str, int | None]:
    if netloc.startswith("["):  # [::1]:8000
        end = netloc.find("]")
        name, rest = netloc[: end + 1], netloc[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = netloc.partition(":")
    return name, int(port) if port.isdigit() else default_port
