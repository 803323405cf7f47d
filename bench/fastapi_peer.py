"""The FastAPI peer: what a Python user would write instead of trio_wsroutes.

Pydantic models in strict mode with the same limits as the attrs schemas in
``servers.py``; a set of subscribers and a loop over it for the broadcast. Served by
``python bench/servers.py fastapi PORT`` (uvicorn, ``websockets-sansio``).
"""

from typing import Literal

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Strict(BaseModel):
    model_config = ConfigDict(strict=True)


class EchoData(Strict):
    text: str = Field(min_length=1, max_length=500)


class EchoIn(Strict):
    type: Literal["echo"]
    data: EchoData
    id: int | str | None = None


class EchoOut(Strict):
    type: Literal["echo"] = "echo"
    data: EchoData
    id: int | str | None = None


class TickData(Strict):
    n: int
    user: str = Field(min_length=1, max_length=50)
    text: str = Field(min_length=1, max_length=500)


class PublishIn(Strict):
    type: Literal["publish"]
    data: TickData


class TickOut(Strict):
    type: Literal["tick"] = "tick"
    data: TickData


def error(exc: ValidationError) -> str:
    details = [{"path": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()]
    return EchoError(error="validation failed", details=details).model_dump_json()


class EchoError(BaseModel):
    type: Literal["error"] = "error"
    error: str
    code: str = "VALIDATION_ERROR"
    details: list[dict[str, str]]


app = FastAPI()
subscribers: set[WebSocket] = set()


@app.websocket("/echo")
async def echo(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            raw = await ws.receive_text()
            try:
                incoming = EchoIn.model_validate_json(raw)
            except ValidationError as exc:
                await ws.send_text(error(exc))
                continue
            reply = EchoOut(data=incoming.data, id=incoming.id)
            await ws.send_text(reply.model_dump_json(exclude_none=True))
    except WebSocketDisconnect:
        pass


@app.websocket("/sub")
async def sub(ws: WebSocket) -> None:
    await ws.accept()
    subscribers.add(ws)
    try:
        while True:
            await ws.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        subscribers.discard(ws)


@app.websocket("/pub")
async def pub(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            raw = await ws.receive_text()
            try:
                incoming = PublishIn.model_validate_json(raw)
            except ValidationError as exc:
                await ws.send_text(error(exc))
                continue
            text = TickOut(data=incoming.data).model_dump_json()
            for subscriber in list(subscribers):
                try:
                    await subscriber.send_text(text)
                except Exception:
                    subscribers.discard(subscriber)
    except WebSocketDisconnect:
        pass
