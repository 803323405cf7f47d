"""Several people editing one document: every client applies the same edits in order.

Each document is a topic (``doc:{id}``). On connect a client gets the document's current
text and version (``init``), then every edit anyone makes (``edit``). Edits name the
version they were made against; the server applies them in arrival order, bumps the
version, and broadcasts the edit with the new version, so every client applies the same
edits in the same order. An edit made against an old version is refused with
``STALE_VERSION`` and the client resynchronises from the ``init`` in the error's place
(a real editor would transform the edit instead: this example keeps the protocol small).
Run: ``python -m examples.collaborative_editing``; connect to
``ws://127.0.0.1:8000/document/notes?token=ada``.
"""

from __future__ import annotations

import attrs

from trio_wsroutes import (
    Connection,
    Context,
    MessageError,
    Request,
    WebSocketServer,
    create_websocket_route,
    message,
)


@attrs.frozen
class Editor:
    """Who is editing (any ``?token=`` is accepted as a name in this example)."""

    id: str


def editor_from_token(request: Request) -> Editor | None:
    """A stand-in for real authentication."""
    token = request.query.get("token")
    return Editor(token) if token else None


@attrs.frozen
class Edit:
    """Replace ``text[start:end]`` with ``insert``, made against ``base_version``."""

    base_version: int = attrs.field(validator=attrs.validators.ge(0))
    start: int = attrs.field(validator=attrs.validators.ge(0))
    end: int = attrs.field(validator=attrs.validators.ge(0))
    insert: str = attrs.field(default="", validator=attrs.validators.max_len(10_000))


@message("init")
@attrs.frozen
class Init:
    """The document as it is now."""

    doc_id: str
    content: str
    version: int


@message("edit")
@attrs.frozen
class EditApplied:
    """An edit, as applied by the server; ``version`` is the document's new version."""

    user_id: str
    start: int
    end: int
    insert: str
    version: int


@attrs.define
class Document:
    """The server's copy of a document."""

    content: str = ""
    version: int = 0


documents: dict[str, Document] = {}
DocMessage = Init | EditApplied

route = (
    create_websocket_route("/document/:doc_id")
    .server_messages(Init, EditApplied)
    .authenticate(editor_from_token)
)


@route.on_connect
async def send_initial_state(ws: Connection[DocMessage], ctx: Context[Editor]) -> None:
    doc_id = ctx.params["doc_id"]
    document = documents.setdefault(doc_id, Document())
    # Subscribe first, then send the snapshot: no edit can fall between the two, since
    # edits are applied and published by handlers on this same Trio thread without
    # awaiting in between.
    await ws.subscribe(f"doc:{doc_id}")
    await ws.send(Init(doc_id=doc_id, content=document.content, version=document.version))


@route.on("edit", Edit)
async def apply_edit(ws: Connection[DocMessage], data: Edit, ctx: Context[Editor]) -> None:
    doc_id = ctx.params["doc_id"]
    document = documents.setdefault(doc_id, Document())
    if data.base_version != document.version:
        raise MessageError(
            f"Edit made against version {data.base_version}, document is at {document.version}",
            code="STALE_VERSION",
        )
    if not data.start <= data.end <= len(document.content):
        raise MessageError("Edit range is outside the document", code="BAD_RANGE")
    document.content = document.content[: data.start] + data.insert + document.content[data.end :]
    document.version += 1
    applied = EditApplied(
        user_id=ctx.user.id,
        start=data.start,
        end=data.end,
        insert=data.insert,
        version=document.version,
    )
    await ws.publish(f"doc:{doc_id}", applied, include_self=True)


server = WebSocketServer([route])
