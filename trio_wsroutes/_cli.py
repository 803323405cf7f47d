"""The ``trio-wsroutes`` command: client types, JSON Schema and AsyncAPI from a server, and
a development server.

::

    trio-wsroutes serve app.main:server [--native [--workers N]] [--host H] [--port P] [--reload]
    trio-wsroutes typegen app.main:server -o client/websocket-types.ts [--routes /a /b] [--watch]
    trio-wsroutes typegen app.main:server -o src/websocket-types.ts --client src/client.ts
    trio-wsroutes schema app.main:server -o schema.json
    trio-wsroutes asyncapi app.main:server -o asyncapi.yaml

``TARGET`` is ``module:attribute`` (``attribute`` defaults to ``server``): a
``WebSocketServer``, a route, or a list of routes, imported with the current directory
(or ``--app-dir``) on ``sys.path``. Without ``-o`` the output goes to stdout. ``--check``
(with ``-o``) writes nothing and exits 1 when the file is missing or stale (for CI).
``typegen --client PATH`` (repeatable, needs ``-o``) also writes a typed client for each
route: TypeScript importing its types from the ``-o`` file, or plain JavaScript for a
``.js``/``.mjs`` path. ``--watch`` regenerates whenever a Python file the server was
imported from changes (it needs watchfiles, the ``watch`` extra: ``pip install
'trio-wsroutes[watch]'``, or ``pip install -e '.[watch]'`` in a checkout); each run
happens in a fresh interpreter, so edits to any module are picked up. ``--version``
prints the version.

``serve`` runs the server (hypercorn's trio worker, or ``--native``) until Ctrl+C or
SIGTERM, which close every connection with 1001 and return cleanly; ``--reload`` runs it
in a child process and restarts it, gracefully, when a Python file under ``--app-dir``
changes. ``--native --workers N`` serves one port from N worker processes under a
supervisor that forwards the shutdown and restarts a worker that dies.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import reprlib
import sys
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

from ._cli_watch import SOURCES_FLAG, project_sources, reload_loop, watch_install_hint, watch_loop
from ._routes import WebSocketRoute
from ._serving import program_name
from ._targets import TargetError, load_target
from ._typegen import (
    TypeGenerationError,
    client_language,
    generate_asyncapi,
    generate_json_schema,
    generate_websocket_client,
    generate_websocket_types,
    write_if_changed,
)
from ._typegen._build import silent_routes
from ._version import __version__

__all__ = ["main"]


def _prog() -> str:
    """``trio-wsroutes``, or ``python -m trio_wsroutes`` when run that way (the name a
    message should tell the user to type)."""
    name = program_name()
    return name if name == "python -m trio_wsroutes" else "trio-wsroutes"


class _Failure(Exception):
    """A problem to report on one line, with exit status 1 (2 for ``serve``, which also
    exits 2 when it cannot listen)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog(),
        description=(
            "Serve trio_wsroutes routes, and generate client types and API descriptions from them."
        ),
    )
    parser.add_argument("--version", action="version", version=f"trio-wsroutes {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        "typegen": "TypeScript types for browser clients (a namespace per route)",
        "schema": "a JSON Schema (2020-12) document for every message",
        "asyncapi": "an AsyncAPI 3.0 document (YAML, or JSON for a .json output)",
    }
    for name, text in helps.items():
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument(
            "target",
            metavar="TARGET",
            help="module:attribute naming a WebSocketServer, a route or a list of routes "
            "(attribute defaults to 'server')",
        )
        command.add_argument("-o", "--output", help="file to write (default: stdout)")
        command.add_argument(
            "--routes", nargs="+", metavar="PATH", help="only these route paths (/chat/:room)"
        )
        command.add_argument(
            "--app-dir",
            default=".",
            help="directory to import TARGET from (default: the current directory)",
        )
        mode = command.add_mutually_exclusive_group()
        mode.add_argument(
            "--watch",
            action="store_true",
            help="regenerate when the server's Python files change (needs watchfiles)",
        )
        mode.add_argument(
            "--check",
            action="store_true",
            help="write nothing; exit 1 if the output file is missing or out of date",
        )
        if name == "typegen":
            command.add_argument(
                "--client",
                action="append",
                default=[],
                metavar="PATH",
                help="also write a typed client for each route: TypeScript (.ts), or plain "
                "JavaScript (.js, .mjs) for pages without a build step; repeatable; needs -o",
            )
        if name == "asyncapi":
            command.add_argument("--title", default="WebSocket API", help="info.title")
            command.add_argument("--api-version", default="1.0.0", help="info.version")
            command.add_argument(
                "--server",
                action="append",
                default=[],
                metavar="NAME=URL",
                help="a server entry, e.g. local=ws://localhost:8000 (repeatable)",
            )
            command.add_argument(
                "--format",
                choices=["yaml", "json"],
                help="output format (default: JSON for a .json output, else YAML)",
            )
        command.add_argument(SOURCES_FLAG, help=argparse.SUPPRESS)
        command.set_defaults(command_parser=command)
    serve_help = "serve a WebSocketServer (for development; Ctrl+C stops it gracefully)"
    serve = commands.add_parser("serve", help=serve_help, description=serve_help)
    serve.add_argument(
        "target",
        metavar="TARGET",
        help="module:attribute naming a WebSocketServer (attribute defaults to 'server')",
    )
    serve.add_argument(
        "--native",
        action="store_true",
        help="the native transport (default: hypercorn's trio worker, with http_app)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (8000)")
    serve.add_argument("--certfile", help="TLS certificate chain (PEM): serve wss://")
    serve.add_argument("--keyfile", help="TLS private key (PEM), with --certfile")
    serve.add_argument(
        "--app-dir",
        default=".",
        help="directory to import TARGET from (default: the current directory)",
    )
    serve.add_argument(
        "--reload",
        action="store_true",
        help="restart when the server's Python files change (needs watchfiles)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="with --native: N worker processes on one port, supervised (default: 1, "
        "one process); more than one needs a RedisBroker to share topics; SIGHUP "
        "replaces them one at a time with the code as it is now",
    )
    serve.add_argument(
        "--allow-memory-broker",
        action="store_true",
        help="with --workers: allow a MemoryBroker (each worker keeps its own topics)",
    )
    # A worker of a supervisor: the socket to talk to it, the listening sockets it shares.
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--listen-fds", help=argparse.SUPPRESS)
    serve.set_defaults(command_parser=serve)
    return parser


_EXPECTED = "expected a WebSocketServer, a route or a list of routes"


def _short_repr(value: object) -> str:
    """``repr(value)`` on one line, cut to a readable length."""
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = 60
    shortener.maxlist = shortener.maxtuple = shortener.maxdict = shortener.maxset = 3
    text = " ".join(shortener.repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(value: object) -> str:
    kind = "class" if isinstance(value, type) else type(value).__name__
    article = "an" if kind[:1].lower() in ("a", "e", "i", "o", "u") else "a"
    return f"{article} {kind} ({_short_repr(value)})"


def check_source(found: object, target: str) -> object:
    """Refuse, on one line, a TARGET that is not a server, a route or a list of routes.

    Returns what to generate from: ``found``, or its routes as a list when ``found`` is
    an iterable of routes (so that a generator is read once).
    """
    if isinstance(found, WebSocketRoute):
        return cast(object, found)
    routes: object = getattr(found, "routes", found)
    if (
        isinstance(found, type)
        or isinstance(routes, str | bytes | Mapping)
        or not isinstance(routes, Iterable)
    ):
        raise _Failure(f"{target} is {_describe(found)}; {_EXPECTED}")
    items = list(cast("Iterable[object]", routes))
    for index, item in enumerate(items):
        if not isinstance(item, WebSocketRoute):
            raise _Failure(
                f"item {index} of {target} is {_describe(item)}; expected a route from "
                "create_websocket_route"
            )
    return found if routes is not found else items


def _servers(entries: Sequence[str]) -> dict[str, str]:
    servers: dict[str, str] = {}
    for entry in entries:
        name, sep, url = entry.partition("=")
        if not sep or not name or not url:
            raise _Failure(f"--server takes NAME=URL, got {entry!r}")
        servers[name] = url
    return servers


_TS_TO_JS = {".ts": ".js", ".tsx": ".js", ".mts": ".mjs", ".cts": ".cjs"}


def types_module(types_path: str, client_path: str) -> str:
    """The module specifier a client at ``client_path`` imports the types file
    ``types_path`` by: relative, with the ``.js`` extension TypeScript resolves
    (``./websocket-types.js`` for ``websocket-types.ts`` beside it)."""
    directory = Path(os.path.abspath(client_path)).parent
    relative = Path(os.path.relpath(os.path.abspath(types_path), directory)).as_posix()
    suffix = Path(relative).suffix
    if suffix in _TS_TO_JS:
        relative = relative[: -len(suffix)] + _TS_TO_JS[suffix]
    return relative if relative.startswith("../") else "./" + relative


def _render(args: argparse.Namespace) -> list[tuple[str | None, str]]:
    """``(path, text)`` for each file to write (``None``: stdout)."""
    source: Any = check_source(load_target(args.target, args.app_dir), args.target)
    for path in silent_routes(source, args.routes):
        print(
            f"{_prog()}: warning: route {path!r} declares no server messages: the "
            "generated types say it sends only errors and acks; if its handlers send "
            "messages, declare them with .server_messages(...)",
            file=sys.stderr,
        )
    if args.command == "typegen":
        outputs: list[tuple[str | None, str]] = [
            (args.output, generate_websocket_types(source, routes=args.routes))
        ]
        for client in args.client:
            text = generate_websocket_client(
                source,
                routes=args.routes,
                language=client_language(client),
                types_module=types_module(args.output, client),
            )
            outputs.append((client, text))
        return outputs
    if args.command == "schema":
        return [(args.output, generate_json_schema(source, routes=args.routes))]
    fmt = args.format
    if fmt is None:
        fmt = "json" if args.output and args.output.lower().endswith(".json") else "yaml"
    text = generate_asyncapi(
        source,
        routes=args.routes,
        title=args.title,
        version=args.api_version,
        servers=_servers(args.server),
        format=fmt,
    )
    return [(args.output, text)]


def _command_line(args: argparse.Namespace) -> str:
    """The command that writes the files ``args`` names (for ``--check``'s message)."""
    words = ["trio-wsroutes", args.command, args.target, "-o", args.output]
    for client in getattr(args, "client", []):
        words += ["--client", client]
    return " ".join(words)


def _generate(args: argparse.Namespace) -> int:
    outputs = _render(args)
    if getattr(args, "report_sources", None):
        Path(args.report_sources).write_text(json.dumps(project_sources()))
    if args.output is None:
        sys.stdout.write(outputs[0][1])
        sys.stdout.flush()
        return 0
    if args.check:
        status = 0
        for path, text in outputs:
            assert path is not None
            try:
                current: str | None = Path(path).read_text()
            except FileNotFoundError:
                current = None
            if current != text:
                state = "is missing" if current is None else "is out of date"
                print(
                    f"{_prog()}: {path} {state}; run: {_command_line(args)}",
                    file=sys.stderr,
                )
                status = 1
            else:
                print(f"{_prog()}: {path} is up to date", file=sys.stderr)
        return status
    for path, text in outputs:
        assert path is not None
        changed = write_if_changed(path, text)
        state = "wrote" if changed else "unchanged:"
        print(f"{_prog()}: {state} {path}", file=sys.stderr, flush=True)
    return 0


# -- watch mode ----------------------------------------------------------------------------


def _watch_install_hint() -> str:
    try:
        distribution = importlib.metadata.distribution("trio-wsroutes")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "python -m pip install 'watchfiles>=0.21'"
    extras = distribution.metadata.get_all("Provides-Extra") or []
    return watch_install_hint(distribution.read_text("direct_url.json"), extras, os.getcwd())


def _watch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if importlib.util.find_spec("watchfiles") is None:
        raise _Failure(f"--watch needs watchfiles: {_watch_install_hint()}")
    import trio

    child = [a for a in argv if a != "--watch"]
    trio.run(watch_loop, child, os.path.abspath(args.app_dir))
    return 0


# -- serve ---------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    import ssl

    import trio

    from ._server import BoundAddress, WebSocketServer

    server = load_target(args.target, args.app_dir)
    if not isinstance(server, WebSocketServer):
        raise _Failure(f"{args.target} is {_describe(server)}, not a WebSocketServer")
    context: ssl.SSLContext | None = None
    if args.certfile is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.certfile, args.keyfile)
        except (OSError, ssl.SSLError) as exc:
            files = args.certfile if args.keyfile is None else f"{args.certfile}, {args.keyfile}"
            detail = exc.reason if isinstance(exc, ssl.SSLError) else None
            reason = exc.strerror or detail or str(exc)
            raise _Failure(f"cannot load the certificate ({files}): {reason}") from None
    paths = ", ".join(route.path for route in server.routes)
    if args.worker is not None:
        from ._workers import run_worker

        fds = [int(fd) for fd in args.listen_fds.split(",")] if args.listen_fds else []
        return run_worker(server, args.host, args.port, context, args.worker, fds)
    if args.workers > 1:
        return _serve_workers(args, server, paths)
    serve = server.serve_native if args.native else server.serve
    transport = "native transport" if args.native else "hypercorn"

    class Announce(trio.TaskStatus[list[BoundAddress]]):
        """Says where the server listens, once it does (as ``task_status``: ``serve``
        runs as the main task, so a failure to start is its own one-line exit)."""

        def started(self, value: list[BoundAddress] | None = None) -> None:
            for address in value or []:
                print(
                    f"{_prog()}: serving {args.target} on {address.ws_url} ({transport}; "
                    f"routes: {paths}); Ctrl+C to stop",
                    file=sys.stderr,
                    flush=True,
                )

    async def run() -> None:
        await serve(args.host, args.port, ssl_context=context, task_status=Announce())

    trio.run(run)
    print(f"{_prog()}: stopped", file=sys.stderr, flush=True)
    return 0


def _serve_workers(args: argparse.Namespace, server: Any, paths: str) -> int:
    import trio

    from ._serving import BoundAddress, StartupError
    from ._supervisor import WorkerPlan, WorkerStartFailed, supervise
    from ._workers import check_broker, needs_shared_metrics, worker_argv

    try:
        check_broker(server, args.workers, args.allow_memory_broker, "--allow-memory-broker")
    except ValueError as exc:
        raise _Failure(str(exc)) from None
    argv = worker_argv(
        args.target, args.host, args.port, args.app_dir, args.certfile, args.keyfile
    )
    plan = WorkerPlan(
        argv,
        args.workers,
        args.host,
        args.port,
        server.options.close_timeout,
        share_metrics=needs_shared_metrics(server),
    )
    if not logging.getLogger().handlers:  # say restarts on stderr, as the other lines
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"{_prog()}: %(message)s"))
        logging.getLogger("trio_wsroutes.workers").addHandler(handler)
        logging.getLogger("trio_wsroutes.workers").setLevel(logging.INFO)

    def announce(addresses: list[BoundAddress]) -> None:
        for address in addresses:
            print(
                f"{_prog()}: serving {args.target} on {address.ws_url} (native transport, "
                f"{args.workers} workers; routes: {paths}); Ctrl+C to stop",
                file=sys.stderr,
                flush=True,
            )

    try:
        trio.run(supervise, plan, announce)
    except (StartupError, WorkerStartFailed, ValueError) as exc:
        raise _Failure(exc.strerror if isinstance(exc, StartupError) else str(exc)) from None
    print(f"{_prog()}: stopped", file=sys.stderr, flush=True)
    return 0


def _serve_reloading(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if importlib.util.find_spec("watchfiles") is None:
        raise _Failure(f"--reload needs watchfiles: {_watch_install_hint()}")
    import trio

    child = [a for a in argv if a != "--reload"]
    trio.run(reload_loop, child, os.path.abspath(args.app_dir))
    return 0


# -- entry point ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(arguments)
    command_parser: argparse.ArgumentParser = args.command_parser
    if getattr(args, "check", False) and args.output is None:
        command_parser.error("--check needs -o: the file to compare with what would be written")
    if getattr(args, "client", None) and args.output is None:
        command_parser.error("--client needs -o: the types file the client imports")
    try:
        if args.command == "serve":
            if args.keyfile is not None and args.certfile is None:
                command_parser.error("--keyfile needs --certfile")
            if args.workers < 1:
                command_parser.error(f"--workers must be at least 1, got {args.workers}")
            if args.workers > 1 and not args.native:
                command_parser.error(
                    "--workers needs --native (under hypercorn: hypercorn --worker-class trio "
                    "--workers N)"
                )
            if args.workers > 1 and args.reload:
                command_parser.error("--reload runs one process: drop --workers")
            if args.reload:
                return _serve_reloading(args, arguments)
            return _serve(args)
        if args.watch:
            return _watch(args, arguments)
        return _generate(args)
    except (_Failure, TargetError, TypeGenerationError) as exc:
        print(f"{_prog()}: error: {exc}", file=sys.stderr)
        # A server that cannot start exits 2 (as when it cannot listen); generation 1.
        return 2 if args.command == "serve" else 1
    except KeyboardInterrupt:
        return 130
    except Exception:
        # An error in the user's modules: the traceback says where.
        traceback.print_exc()
        return 1


def _exit() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    _exit()
