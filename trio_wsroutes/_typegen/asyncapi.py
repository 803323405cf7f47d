"""AsyncAPI 3.0 output: the server's routes as channels, its messages as operations.

* Each route is a channel whose ``address`` is the path with ``{param}`` placeholders,
  with its parameters.
* Each client message is a ``receive`` operation (the application, the server, receives
  it); each server message, the error envelope, and the ack (on routes where a handler may
  return nothing), a ``send`` operation. A handler whose return annotation names server
  messages (or ``None``: the ack) gets a ``reply``.
* Message payloads are the whole envelope (``type``, ``data``, ``id``; for server
  messages also the optional position ``topic``, ``offset``, ``epoch`` of a publication
  on a topic with history) as AsyncAPI (JSON Schema draft-07) schemas; data classes and
  enums go to ``components/schemas``.
* ``authenticate`` becomes the operations' ``security``: ``create_token_auth`` as a bearer
  token, a query parameter and/or a cookie (any one suffices); another function as an
  ``http`` scheme described by that function's name and docstring.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from ._model import ApiModel, AuthScheme, MessageDef, RouteModel, TypeGenerationError
from ._yaml import dump_yaml
from .jsonschema import SchemaBuilder
from .typescript import describe_auth

__all__ = ["build_asyncapi", "render_asyncapi"]

Document = dict[str, Any]
_KEY: Final = re.compile(r"[^\w.\-]")


def _key(text: str) -> str:
    return _KEY.sub("_", text) or "_"


def _summary(text: str | None) -> str | None:
    if not text:
        return None
    return " ".join(text.strip().split("\n\n", 1)[0].split())


def _security(scheme: AuthScheme) -> tuple[str, Document]:
    text = scheme.description[:1].upper() + scheme.description[1:] + "."
    if scheme.kind == "bearer":
        return "bearer", {"type": "http", "scheme": "bearer", "description": text}
    if scheme.kind in ("query", "cookie"):
        name = scheme.name or "token"
        return f"{scheme.kind}_{_key(name)}", {
            "type": "httpApiKey",
            "name": name,
            "in": scheme.kind,
            "description": text,
        }
    return f"custom_{_key(scheme.name or 'authenticate')}", {
        "type": "http",
        "scheme": "custom",
        "description": text[:-1]
        + " on the upgrade request; the generator cannot tell which credentials it reads.",
    }


def _servers(servers: Mapping[str, str]) -> Document:
    out: Document = {}
    for name, url in servers.items():
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.netloc:
            raise TypeGenerationError(
                f"server {name!r}: expected a ws:// or wss:// URL, got {url!r}"
            )
        server: Document = {"host": parts.netloc, "protocol": parts.scheme}
        if parts.path.strip("/"):
            server["pathname"] = "/" + parts.path.strip("/")
        out[_key(name)] = server
    return out


class _Channel:
    """The channel and operations of one route."""

    def __init__(self, route: RouteModel, builder: SchemaBuilder) -> None:
        self.route = route
        self.builder = builder
        self.messages: Document = {}
        self.keys: dict[tuple[str, str], str] = {}
        self.security: list[Document] = []
        self.schemes: Document = {}
        for scheme in route.auth or ():
            key, body = _security(scheme)
            self.schemes[key] = body
            self.security.append({"$ref": f"#/components/securitySchemes/{key}"})
        for message in route.server_messages:
            self.add("server", message)
        self.messages["server.error"] = {"$ref": "#/components/messages/WebSocketError"}
        if route.acks:
            self.messages["server.ack"] = {"$ref": "#/components/messages/WebSocketAck"}
        if route.presence:
            for wire, name in _PRESENCE_MESSAGES:
                self.messages[f"server.{wire}"] = {"$ref": f"#/components/messages/{name}"}
        for message in route.client_messages:
            self.add("client", message)

    def add(self, direction: Literal["client", "server"], message: MessageDef) -> None:
        key = f"{direction}.{_key(message.type)}"
        while key in self.messages:
            key += "_"
        self.keys[(direction, message.type)] = key
        body: Document = {"name": message.type, "title": message.type}
        summary = _summary(message.description)
        if summary:
            body["summary"] = summary
        body["contentType"] = "application/json"
        body["payload"] = self.builder.envelope(message, direction)
        body["x-python-class"] = message.python
        self.messages[key] = body

    def ref(self, key: str) -> Document:
        return {"$ref": f"#/channels/{self.route.namespace}/messages/{key}"}

    def channel(self) -> Document:
        route = self.route
        channel: Document = {"address": route.address, "title": route.namespace}
        text = f"WebSocket route `{route.path}`"
        if route.module:
            text += f", defined in `{route.module}`"
        channel["description"] = f"{text}. Authentication: {describe_auth(route.auth)}"
        if route.params:
            channel["parameters"] = {
                p: {"description": f"The `{p}` segment of `{route.path}`."} for p in route.params
            }
        channel["messages"] = self.messages
        return channel

    def operation(self, action: Literal["send", "receive"], key: str, summary: str) -> Document:
        body: Document = {
            "action": action,
            "channel": {"$ref": f"#/channels/{self.route.namespace}"},
            "summary": summary,
            "messages": [self.ref(key)],
        }
        if self.security:
            body["security"] = self.security
        return body

    def operations(self) -> Document:
        ns = self.route.namespace
        out: Document = {}
        for message in self.route.client_messages:
            key = self.keys[("client", message.type)]
            op = self.operation("receive", key, f"A client sends `{message.type}`.")
            replies = [
                self.keys[("server", t)] for t in message.replies if ("server", t) in self.keys
            ]
            if message.acked:
                replies.append("server.ack")
            if replies:
                op["reply"] = {
                    "channel": {"$ref": f"#/channels/{ns}"},
                    "messages": [self.ref(k) for k in replies],
                }
            out[f"{ns}.receive.{key.split('.', 1)[1]}"] = op
        for message in self.route.server_messages:
            key = self.keys[("server", message.type)]
            out[f"{ns}.send.{key.split('.', 1)[1]}"] = self.operation(
                "send", key, f"The server sends `{message.type}`."
            )
        out[f"{ns}.send.error"] = self.operation(
            "send", "server.error", "The server reports a message it could not accept or handle."
        )
        if self.route.acks:
            out[f"{ns}.send.ack"] = self.operation(
                "send",
                "server.ack",
                "The server acknowledges a message whose handler returned nothing.",
            )
        if self.route.presence:
            for wire, _ in _PRESENCE_MESSAGES:
                out[f"{ns}.send.{wire}"] = self.operation(
                    "send", f"server.{wire}", f"The server sends `{wire}` (presence events)."
                )
        return out


_PRESENCE_MESSAGES: Final = (
    ("presence_join", "WebSocketPresenceJoin"),
    ("presence_leave", "WebSocketPresenceLeave"),
)


def build_asyncapi(
    model: ApiModel,
    *,
    title: str,
    version: str,
    description: str | None = None,
    servers: Mapping[str, str] | None = None,
) -> Document:
    """The AsyncAPI 3.0 document for ``model``, as JSON-ready data."""
    builder = SchemaBuilder(dialect="draft-07", ref_prefix="#/components/schemas/")
    schemas: Document = builder.framework_definitions()
    if model.presence:
        schemas.update(builder.presence_definitions())
    for definition in model.definitions:
        schemas[definition.name] = builder.definition(definition)
    security_schemes: Document = {}
    channels: Document = {}
    operations: Document = {}
    for route in model.routes:
        channel = _Channel(route, builder)
        channels[route.namespace] = channel.channel()
        operations.update(channel.operations())
        security_schemes.update(channel.schemes)

    info: Document = {"title": title, "version": version}
    info["description"] = description or (
        "Generated by trio_wsroutes from the server's Python message classes. Every frame "
        "is a JSON text message: an envelope with `type`, `data` and an optional `id`, "
        "which the reply carries back. A publication on a topic with history also "
        "carries its position, `topic`, `offset` and `epoch`; a client that reconnects "
        "with `since=TOPIC@EPOCH:OFFSET` (URL-encoded, one query parameter per topic) "
        "gets what it missed."
    )
    document: Document = {"asyncapi": "3.0.0", "info": info}
    if servers:
        document["servers"] = _servers(servers)
    document["defaultContentType"] = "application/json"
    document["channels"] = channels
    document["operations"] = operations
    components: Document = {
        "schemas": schemas,
        "messages": {
            "WebSocketError": {
                "name": "error",
                "title": "error",
                "summary": "The error envelope.",
                "contentType": "application/json",
                "payload": {"$ref": "#/components/schemas/WebSocketErrorMessage"},
            },
            "WebSocketAck": {
                "name": "ack",
                "title": "ack",
                "summary": "The answer to a message with an id whose handler returned nothing.",
                "contentType": "application/json",
                "payload": {"$ref": "#/components/schemas/WebSocketAckMessage"},
            },
        },
    }
    if model.presence:
        for wire, name in _PRESENCE_MESSAGES:
            components["messages"][name] = {
                "name": wire,
                "title": wire,
                "summary": "A user's first connection joined a topic (once per user)."
                if wire == "presence_join"
                else "A user's last connection left a topic (once per user).",
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{name}Message"},
            }
    if security_schemes:
        components["securitySchemes"] = dict(sorted(security_schemes.items()))
    document["components"] = components
    return document


def render_asyncapi(
    model: ApiModel,
    *,
    title: str,
    version: str,
    description: str | None = None,
    servers: Mapping[str, str] | None = None,
    format: Literal["yaml", "json"] = "yaml",
) -> str:
    """The AsyncAPI document as YAML or JSON text."""
    document = build_asyncapi(
        model, title=title, version=version, description=description, servers=servers
    )
    if format == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    header = (
        "# Generated by trio_wsroutes from the server's Python message classes. Do not edit:\n"
        "# regenerate with `trio-wsroutes asyncapi`.\n"
    )
    return header + dump_yaml(document)
