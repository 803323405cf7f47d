"""Route paths: patterns such as ``/chat/:room``, and the router that matches them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Generic, Protocol, TypeVar

import attrs

__all__ = ["PathPattern", "RouteMatch", "Router", "Routable"]


_PARAM = re.compile(r"^(?::([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})$")


@attrs.frozen
class PathPattern:
    """A route path such as ``/rooms/:room_id/chat/{chat_id}``.

    Segments are static text or a parameter (``:name`` or ``{name}``) matching one
    non-empty segment. A trailing slash is ignored.
    """

    path: str
    segments: tuple[str | None, ...]
    """Static text, or ``None`` for a parameter."""
    param_names: tuple[str, ...]

    @classmethod
    def parse(cls, path: str) -> PathPattern:
        """Parse ``path``; raise ``ValueError`` for a malformed pattern."""
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"route path must start with '/': {path!r}")
        segments: list[str | None] = []
        names: list[str] = []
        for part in _split(path):
            found = _PARAM.match(part)
            if found:
                name = found.group(1) or found.group(2)
                if name in names:
                    raise ValueError(f"path parameter {name!r} appears twice in {path!r}")
                names.append(name)
                segments.append(None)
            elif ":" in part[:1] or "{" in part or "}" in part:
                raise ValueError(f"malformed path parameter {part!r} in {path!r}")
            else:
                segments.append(part)
        return cls(path, tuple(segments), tuple(names))

    @property
    def shape(self) -> str:
        """The pattern with parameter names erased: two routes with one shape clash."""
        return "/" + "/".join("{}" if s is None else s for s in self.segments)

    def match(self, path: str) -> dict[str, str] | None:
        """The parameters if ``path`` matches this pattern alone, else ``None``."""
        parts = _split(path)
        if len(parts) != len(self.segments):
            return None
        values: list[str] = []
        for segment, part in zip(self.segments, parts, strict=True):
            if segment is None:
                if not part:
                    return None
                values.append(part)
            elif segment != part:
                return None
        return dict(zip(self.param_names, values, strict=True))


def _split(path: str) -> list[str]:
    stripped = path.strip("/")
    return stripped.split("/") if stripped else []


class Routable(Protocol):
    """Anything with a path pattern: a route builder or a resolved route spec."""

    @property
    def pattern(self) -> PathPattern: ...

    @property
    def path(self) -> str: ...


R = TypeVar("R", bound=Routable)


@attrs.frozen
class RouteMatch(Generic[R]):
    """A route found for a request path, with its parameter values."""

    route: R
    params: Mapping[str, str]


class _Node(Generic[R]):
    __slots__ = ("param", "route", "static")

    def __init__(self) -> None:
        self.static: dict[str, _Node[R]] = {}
        self.param: _Node[R] | None = None
        self.route: R | None = None


class Router(Generic[R]):
    """Finds the route for a path; static segments win over parameters."""

    def __init__(self, routes: Iterable[R] = ()) -> None:
        self._root: _Node[R] = _Node()
        self._shapes: dict[str, R] = {}
        self.routes: list[R] = []
        for route in routes:
            self.add(route)

    def add(self, route: R) -> None:
        """Add ``route``; raise ``ValueError`` if its path clashes with another route."""
        if not isinstance(getattr(route, "pattern", None), PathPattern):
            raise TypeError(f"expected a route from create_websocket_route, got {route!r}")
        shape = route.pattern.shape
        other = self._shapes.get(shape)
        if other is not None:
            raise ValueError(
                f"route {route.path!r} is registered twice"
                if other.path == route.path
                else f"routes {other.path!r} and {route.path!r} match the same paths"
            )
        node = self._root
        for segment in route.pattern.segments:
            if segment is None:
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                node = node.static.setdefault(segment, _Node())
        node.route = route
        self._shapes[shape] = route
        self.routes.append(route)

    def match(self, path: str) -> RouteMatch[R] | None:
        """The route for ``path`` with its parameters, or ``None``."""
        parts = _split(path)
        values: list[str] = []
        route = _walk(self._root, parts, 0, values)
        if route is None:
            return None
        return RouteMatch(route, dict(zip(route.pattern.param_names, values, strict=True)))


def _walk(node: _Node[R], parts: list[str], index: int, values: list[str]) -> R | None:
    if index == len(parts):
        return node.route
    part = parts[index]
    child = node.static.get(part)
    if child is not None:
        found = _walk(child, parts, index + 1, values)
        if found is not None:
            return found
    if node.param is not None and part:
        values.append(part)
        found = _walk(node.param, parts, index + 1, values)
        if found is not None:
            return found
        values.pop()
    return None
