"""Client types from the server's routes: TypeScript, a typed client (TypeScript or
JavaScript), JSON Schema and AsyncAPI.

All read the same model (:mod:`._model`): the routes of a server, their message classes,
and each field's type as the project's converter puts it on the wire. Nothing here
imports Trio, hypercorn or a network library; the only I/O is writing ``output_path``
when one is given (and reading the client runtime, package data beside this module).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from ._build import build_model
from ._model import RoutesSource, TypeGenerationError
from ._names import namespace_names
from .asyncapi import render_asyncapi
from .client import Language, render_client
from .jsonschema import render_json_schema
from .typescript import render_typescript

__all__ = [
    "TypeGenerationError",
    "client_language",
    "generate_asyncapi",
    "generate_json_schema",
    "generate_websocket_client",
    "generate_websocket_types",
    "namespace_names",
    "write_if_changed",
]

StrPath = str | os.PathLike[str]


def write_if_changed(path: StrPath, text: str) -> bool:
    """Write ``text`` to ``path`` (creating directories) unless it holds it already.

    The file is replaced at once (written beside it, then renamed), so a dev server
    watching it never reads half a file. Returns whether the file changed.
    """
    target = Path(path)
    data = text.encode()
    try:
        if target.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, target)
    return True


def generate_websocket_types(
    routes_or_server: RoutesSource,
    output_path: StrPath | None = None,
    routes: Iterable[str] | None = None,
) -> str:
    """TypeScript types for the routes of a server, written to ``output_path`` if given.

    ::

        generate_websocket_types(server, "client/websocket-types.ts")
        generate_websocket_types(server, routes=["/chat/:room"])  # returns the text

    ``routes_or_server`` is a :class:`WebSocketServer`, a route, or an iterable of routes;
    ``routes`` keeps only the routes with these paths (``/chat/:room`` or
    ``/chat/{room}``). Each route becomes a namespace (``/api/chat`` ->
    ``ChatWebSocket``; ``create_websocket_route(path, name=...)`` overrides) holding
    ``ClientMessage`` and ``ServerMessage``, discriminated unions over the envelope
    (``{ type; data; id? }``, plus the error envelope in ``ServerMessage``, whose
    messages may also carry a ``WebSocketTopicPosition``: ``topic``, ``offset`` and
    ``epoch`` on a publication on a topic with history), and
    ``ClientData`` / ``ServerData``, the ``data`` of each message by type. Message data
    classes become shared interfaces. The output passes ``tsc --strict`` and is the same,
    byte for byte, for the same routes.

    Raises :class:`TypeGenerationError` for a field whose type the converter cannot put
    on the wire; the message names the class and the field.
    """
    text = render_typescript(build_model(routes_or_server, routes))
    if output_path is not None:
        write_if_changed(output_path, text)
    return text


def client_language(path: StrPath | None) -> Language:
    """The language of a client written to ``path``: JavaScript for ``.js`` and ``.mjs``,
    TypeScript otherwise."""
    suffix = Path(path).suffix.lower() if path is not None else ""
    return "javascript" if suffix in (".js", ".mjs") else "typescript"


def generate_websocket_client(
    routes_or_server: RoutesSource,
    output_path: StrPath | None = None,
    routes: Iterable[str] | None = None,
    *,
    language: Language | None = None,
    types_module: str = "./websocket-types.js",
) -> str:
    """A typed client for each route, over the browser's ``WebSocket``, written to
    ``output_path`` if given.

    ::

        generate_websocket_types(server, "src/websocket-types.ts")
        generate_websocket_client(server, "src/websocket-client.ts")   # TypeScript
        generate_websocket_client(server, "static/websocket-client.js")  # plain JavaScript

    Per route (namespace ``ChatWebSocket``): ``connectChatWebSocket(url, options)``
    returning a ``WebSocketClient`` typed by the route (``send``, ``request``, ``on``,
    ``onError``, ``onClose``, ``onReconnect``, ...), and ``chatWebSocketPath(params)``
    for routes with path parameters. ``language`` is ``"typescript"`` or
    ``"javascript"``, by default from the suffix of ``output_path`` (``.js``/``.mjs``:
    JavaScript). The TypeScript imports its types (only types) from ``types_module``,
    the module specifier of the file :func:`generate_websocket_types` wrote, relative to
    the client file. The JavaScript is exactly what ``tsc`` emits for the TypeScript
    (``--target es2022``), and needs nothing else at run time.
    """
    if language is None:
        language = client_language(output_path)
    if language not in ("typescript", "javascript"):
        raise ValueError(f"language must be 'typescript' or 'javascript', got {language!r}")
    text = render_client(build_model(routes_or_server, routes), language, types_module)
    if output_path is not None:
        write_if_changed(output_path, text)
    return text


def generate_json_schema(
    routes_or_server: RoutesSource,
    output_path: StrPath | None = None,
    routes: Iterable[str] | None = None,
) -> str:
    """A JSON Schema (2020-12) document describing every message of the routes.

    ``$defs`` holds ``<Namespace>ClientMessage`` and ``<Namespace>ServerMessage`` (whole
    envelopes, one ``oneOf`` per route; a server message may carry ``topic``,
    ``offset`` and ``epoch``, all three or none), the data classes and enums by the same
    names as the TypeScript output, and the error envelope. Arguments as for
    :func:`generate_websocket_types`.
    """
    text = render_json_schema(build_model(routes_or_server, routes))
    if output_path is not None:
        write_if_changed(output_path, text)
    return text


def generate_asyncapi(
    routes_or_server: RoutesSource,
    output_path: StrPath | None = None,
    routes: Iterable[str] | None = None,
    *,
    title: str = "WebSocket API",
    version: str = "1.0.0",
    description: str | None = None,
    servers: Mapping[str, str] | None = None,
    format: Literal["yaml", "json"] | None = None,
) -> str:
    """An AsyncAPI 3.0 document for the routes: channels, operations, messages, security.

    ``servers`` maps names to ``ws://`` or ``wss://`` URLs (``{"local":
    "ws://localhost:8000"}``). ``format`` is ``"yaml"`` or ``"json"``; by default JSON
    when ``output_path`` ends in ``.json``, YAML otherwise. The YAML is written without
    PyYAML. Other arguments as for :func:`generate_websocket_types`.
    """
    if format is None:
        json_suffix = output_path is not None and Path(output_path).suffix.lower() == ".json"
        format = "json" if json_suffix else "yaml"
    if format not in ("yaml", "json"):
        raise ValueError(f"format must be 'yaml' or 'json', got {format!r}")
    text = render_asyncapi(
        build_model(routes_or_server, routes),
        title=title,
        version=version,
        description=description,
        servers=servers,
        format=format,
    )
    if output_path is not None:
        write_if_changed(output_path, text)
    return text
