"""``python -m examples.chat.client --room general [--url ws://127.0.0.1:8000] [--name ada]``:
chat from a terminal.

The Python counterpart of the browser page (``client.ts``), typed by the same route the
server uses (``examples.chat.app.chat``): every line you type is a ``Chat`` message,
``/name NEW`` renames you, ``/ping`` measures the round trip with a typed request,
``/quit`` (or end of input) leaves. If the connection is lost or the server restarts,
the client reconnects and says so, and whether it got what it missed (across a restart
only with the Redis broker, which keeps the history outside the process). Start the
server first: ``python -m examples.chat``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable

import trio

from trio_wsroutes import PresenceJoin, PresenceLeave
from trio_wsroutes.client import (
    Client,
    ClientError,
    ConnectionDenied,
    ServerError,
    WebSocketClosed,
    connect,
)

from .app import Chat, ChatOut, Joined, Ping, Pong, ServerMessage, SetName, chat

ReadLine = Callable[[], Awaitable[str]]
"""Returns the next line typed, with its newline; ``""`` at the end of input."""
Write = Callable[[str], None]


def describe(msg: ServerMessage) -> str:
    """One line of output for a message from the server."""
    match msg:
        case ChatOut(user=user, text=text):
            return f"<{user}> {text}"
        case Joined(room=room, you=you, user_count=count, people=people):
            return f"* you are {you} in #{room} ({count} here: {', '.join(people)})"
        case PresenceJoin(info={"name": str(who)}):
            return f"* {who} joined"
        case PresenceLeave(info={"name": str(who)}):
            return f"* {who} left"
        case PresenceJoin() | PresenceLeave():
            return "* someone came or went"
        case Pong(timestamp=timestamp):
            return f"* pong {timestamp}"


async def run(url: str, name: str | None, read_line: ReadLine, write: Write) -> None:
    """Chat on the room at ``url`` until the input ends or says ``/quit``."""

    async def renamed() -> None:
        # Names live on the server's connection: a new connection needs it again.
        write("* reconnected")
        if name is not None:
            await client.send(SetName(name=name))

    client: Client[ServerMessage]
    async with connect(url, chat, reconnect=True, on_reconnect=renamed) as client:
        if name is not None:
            await client.send(SetName(name=name))
        async with trio.open_nursery() as nursery:

            async def typing() -> None:
                await type_lines(client, read_line, write)
                nursery.cancel_scope.cancel()  # /quit, or the end of input

            nursery.start_soon(typing)
            await show(client, write)
            nursery.cancel_scope.cancel()  # the server ended the chat


async def show(client: Client[ServerMessage], write: Write) -> None:
    """Print what the server sends, its errors too, until the connection ends."""
    while True:
        try:
            async for msg in client:
                write(describe(msg))
        except ServerError as error:
            write(f"! {error.code}: {error.message}")
        except (WebSocketClosed, ConnectionDenied) as error:
            write(f"* disconnected: {error}")
            return
        else:
            return  # closed normally


async def type_lines(client: Client[ServerMessage], read_line: ReadLine, write: Write) -> None:
    """Send what is typed; commands start with ``/``."""
    while line := await read_line():
        text = line.strip()
        try:
            if text == "/quit":
                return
            if text == "/ping":
                pong = await client.request(Ping(timestamp=time.time()), Pong, timeout=5.0)
                write(f"* round trip {1000 * (time.time() - pong.timestamp):.1f} ms")
            elif text.startswith("/name "):
                await client.send(SetName(name=text.removeprefix("/name ").strip()))
            elif text:
                await client.send(Chat(text=text))
        except (ValueError, TypeError) as error:  # attrs validators: an empty or long line
            write(f"! {error}")
        except ClientError as error:  # a timeout, a lost connection: say so, go on
            write(f"! {error}")


async def read_stdin() -> str:
    """The next line of standard input (in a thread: terminals do not work with Trio)."""
    return await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)


def main() -> None:
    """Parse the command line and chat."""
    parser = argparse.ArgumentParser(description="Chat from a terminal.")
    parser.add_argument("--room", default="general")
    parser.add_argument("--url", default="ws://127.0.0.1:8000", help="the chat server")
    parser.add_argument("--name", default=None, help="the name others see")
    args = parser.parse_args()
    url = f"{args.url.rstrip('/')}/chat/{args.room}"

    def write(text: str) -> None:
        print(text, flush=True)

    try:
        trio.run(run, url, args.name, read_stdin, write)
    except KeyboardInterrupt:
        pass
    except (ConnectionDenied, OSError) as error:
        sys.exit(f"cannot join {url}: {error}")


if __name__ == "__main__":
    main()
