"""JSON Schema output (2020-12): every client and server message, for any language.

The same builder writes the draft-07 flavour that AsyncAPI payloads use; only tuples and
the place definitions live (``$defs`` or ``components/schemas``) differ.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal

from .._history import MAX_OFFSET
from ._model import (
    ERROR_CODES,
    AnyJson,
    ApiModel,
    ArrayType,
    Definition,
    EnumDef,
    LiteralType,
    MapType,
    MessageDef,
    Ref,
    RouteModel,
    Scalar,
    TupleType,
    TypeNode,
    UnionType,
)

__all__ = ["Dialect", "SchemaBuilder", "render_json_schema"]

Dialect = Literal["2020-12", "draft-07"]
Schema = dict[str, Any]

DRAFT_2020_12: Final = "https://json-schema.org/draft/2020-12/schema"

_POSITION_FIELDS: Final = {
    "topic": "WebSocketTopic",
    "offset": "WebSocketOffset",
    "epoch": "WebSocketEpoch",
}
"""The fields a publication on a topic with history carries, and their definitions."""


class SchemaBuilder:
    """JSON Schemas for the nodes and definitions of a model."""

    def __init__(self, *, dialect: Dialect, ref_prefix: str) -> None:
        self.dialect: Dialect = dialect
        self.ref_prefix = ref_prefix

    def ref(self, name: str) -> Schema:
        return {"$ref": self.ref_prefix + name}

    def node(self, node: TypeNode) -> Schema:
        if isinstance(node, Scalar):
            schema: Schema = {"type": node.kind}
            if node.format:
                schema["format"] = node.format
            if node.encoding:
                schema["contentEncoding"] = node.encoding
            if node.description:
                schema["description"] = node.description
            return schema
        if isinstance(node, AnyJson):
            return {}
        if isinstance(node, LiteralType):
            values = list(node.values)
            return {"const": values[0]} if len(values) == 1 else {"enum": values}
        if isinstance(node, ArrayType):
            return {"type": "array", "items": self.node(node.items)}
        if isinstance(node, TupleType):
            items = [self.node(n) for n in node.items]
            count = len(items)
            if not items:
                return {"type": "array", "maxItems": 0}
            if self.dialect == "2020-12":
                return {
                    "type": "array",
                    "prefixItems": items,
                    "items": False,
                    "minItems": count,
                    "maxItems": count,
                }
            return {
                "type": "array",
                "items": items,
                "additionalItems": False,
                "minItems": count,
                "maxItems": count,
            }
        if isinstance(node, MapType):
            schema = {"type": "object", "additionalProperties": self.node(node.values)}
            if node.keys is not None:
                schema["propertyNames"] = self.node(node.keys)
            return schema
        if isinstance(node, UnionType):
            return {"anyOf": [self.node(n) for n in node.options]}
        assert isinstance(node, Ref)
        return self.ref(node.name)

    def definition(self, definition: Definition) -> Schema:
        if isinstance(definition, EnumDef):
            schema: Schema = {"title": definition.name}
            if definition.description:
                schema["description"] = definition.description
            schema["enum"] = [value for _, value in definition.members]
            return schema
        schema = {"title": definition.name, "type": "object"}
        if definition.description:
            schema["description"] = definition.description
        properties: Schema = {}
        for prop in definition.properties:
            value = self.node(prop.type)
            if prop.description:
                meaning = value.get("description")
                text = f"{prop.description} ({meaning})" if meaning else prop.description
                value = {**value, "description": text}
            properties[prop.name] = value
        schema["properties"] = properties
        required = [p.name for p in definition.properties if p.required]
        if required:
            schema["required"] = required
        return schema

    def envelope(
        self, message: MessageDef, direction: Literal["client", "server"] = "client"
    ) -> Schema:
        """A whole message: ``{"type": ..., "data": ..., "id"?: ...}``; a server message
        also ``"topic"``, ``"offset"`` and ``"epoch"``, all three or none (present on
        publications on topics with history)."""
        schema: Schema = {"title": message.type, "type": "object"}
        if message.description:
            schema["description"] = message.description
        properties: Schema = {
            "type": {"const": message.type},
            "data": self.ref(message.data.name),
            "id": self.ref("MessageId"),
        }
        schema["properties"] = properties
        schema["required"] = ["type", "data"]
        if direction == "server":
            properties.update(
                (name, self.ref(definition)) for name, definition in _POSITION_FIELDS.items()
            )
            together = {
                name: [o for o in _POSITION_FIELDS if o != name] for name in _POSITION_FIELDS
            }
            # 2020-12 names it dependentRequired; draft-07 (AsyncAPI) dependencies.
            key = "dependentRequired" if self.dialect == "2020-12" else "dependencies"
            schema[key] = together
        return schema

    def framework_definitions(self) -> dict[str, Schema]:
        """``MessageId``, the error envelope and the ack, which every route shares."""
        return {
            "MessageId": {
                "description": "A request id: a message that carries one gets it back on "
                "the reply.",
                "type": ["string", "integer"],
            },
            "WebSocketErrorCode": {
                "description": "Error codes the framework sends; handlers may send their own.",
                "type": "string",
                "examples": list(ERROR_CODES),
            },
            "WebSocketErrorDetail": {
                "description": "One problem with a message: where and what was expected.",
                "type": "object",
                "properties": {
                    "path": {"type": "string", "examples": ["$.data.text"]},
                    "message": {"type": "string"},
                },
                "required": ["path", "message"],
            },
            "WebSocketErrorMessage": {
                "description": "The error envelope: sent for a message the server could not "
                "accept or handle.",
                "type": "object",
                "properties": {
                    "type": {"const": "error"},
                    "error": {"type": "string", "description": "Human-readable text."},
                    "code": self.ref("WebSocketErrorCode"),
                    "id": self.ref("MessageId"),
                    "details": {"type": "array", "items": self.ref("WebSocketErrorDetail")},
                },
                "required": ["type", "error", "code"],
            },
            "WebSocketTopic": {
                "description": "On a publication on a topic with history (with offset and "
                "epoch): the topic it was published on.",
                "type": "string",
                "minLength": 1,
            },
            "WebSocketOffset": {
                "description": "On a publication on a topic with history (with topic and "
                "epoch): its number in the topic's stream, 1, 2, 3... within one epoch. A "
                "client keeps the last one per topic and sends it back when reconnecting "
                "(since=TOPIC@EPOCH:OFFSET) to get what it missed.",
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_OFFSET,
            },
            "WebSocketEpoch": {
                "description": "On a publication on a topic with history (with topic and "
                "offset): one unbroken run of offsets; a new epoch means the topic's "
                "history was lost.",
                "type": "string",
                "pattern": "^[A-Za-z0-9_-]{1,64}$",
            },
            "WebSocketAckMessage": {
                "description": "The answer to a message with an id whose handler returned "
                "nothing.",
                "type": "object",
                "properties": {"type": {"const": "ack"}, "id": self.ref("MessageId")},
                "required": ["type", "id"],
            },
        }

    def presence_definitions(self) -> dict[str, Schema]:
        """The presence events' envelopes (for models where some route gets them)."""
        data: Schema = {
            "description": "Who joined or left: the user id (null for a connection without "
            "one) and the info the server lists with the connection.",
            "type": "object",
            "properties": {"user_id": {"type": ["string", "integer", "null"]}, "info": {}},
            "required": ["user_id", "info"],
        }
        found: dict[str, Schema] = {"WebSocketPresence": data}
        for name, wire, what in (
            ("WebSocketPresenceJoinMessage", "presence_join", "first connection joined"),
            ("WebSocketPresenceLeaveMessage", "presence_leave", "last connection left"),
        ):
            found[name] = {
                "description": f"A user's {what} the topic (once per user).",
                "type": "object",
                "properties": {
                    "type": {"const": wire},
                    "topic": self.ref("WebSocketTopic"),
                    "data": self.ref("WebSocketPresence"),
                    "offset": self.ref("WebSocketOffset"),
                    "epoch": self.ref("WebSocketEpoch"),
                },
                "required": ["type", "topic", "data"],
            }
        return found

    def route_union(self, route: RouteModel, direction: Literal["client", "server"]) -> Schema:
        """A whole message of ``route`` in one direction (a ``oneOf`` over its envelopes;
        the server's include the error envelope, and the ack where a handler may send one)."""
        if direction == "client":
            options = [self.envelope(m) for m in route.client_messages]
            text = f"A message a client may send on {route.path}."
        else:
            options = [self.envelope(m, "server") for m in route.server_messages]
            options.append(self.ref("WebSocketErrorMessage"))
            if route.acks:
                options.append(self.ref("WebSocketAckMessage"))
            if route.presence:
                options.append(self.ref("WebSocketPresenceJoinMessage"))
                options.append(self.ref("WebSocketPresenceLeaveMessage"))
            text = f"A message the server sends on {route.path}."
        if not options:
            return {"description": text + " (None: this route takes no messages.)", "not": {}}
        return {"description": text, "oneOf": options}


def render_json_schema(model: ApiModel) -> str:
    """One JSON Schema 2020-12 document whose ``$defs`` hold every message.

    ``#/$defs/<Namespace>ClientMessage`` and ``#/$defs/<Namespace>ServerMessage`` validate
    whole messages of one route (``ChatWebSocketClientMessage``); the other definitions
    are the message data classes and enums, named as in the TypeScript output.
    """
    builder = SchemaBuilder(dialect="2020-12", ref_prefix="#/$defs/")
    defs: dict[str, Schema] = builder.framework_definitions()
    if model.presence:
        defs.update(builder.presence_definitions())
    for route in model.routes:
        defs[route.namespace + "ClientMessage"] = builder.route_union(route, "client")
        defs[route.namespace + "ServerMessage"] = builder.route_union(route, "server")
    for definition in model.definitions:
        defs[definition.name] = builder.definition(definition)
    document: Schema = {
        "$schema": DRAFT_2020_12,
        "$comment": "Generated by trio_wsroutes from the server's Python message classes. "
        "Do not edit: regenerate with `trio-wsroutes schema`.",
        "title": "WebSocket messages",
        "description": "Validate a message of a route with #/$defs/<Namespace>ClientMessage "
        "or #/$defs/<Namespace>ServerMessage. Routes: "
        + (", ".join(f"{r.path} ({r.namespace})" for r in model.routes) or "none")
        + ".",
        "$defs": defs,
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
