"""The ``trio-wsroutes`` command's watch modes: ``typegen --watch`` (regenerate in a
fresh interpreter whenever a Python file the server was imported from changes) and
``serve --reload`` (restart the server's process, gracefully, when a Python file under
``--app-dir`` changes), with watchfiles."""

from __future__ import annotations

import json
import os
import signal
import sys
import sysconfig
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TypeGuard

__all__ = ["SOURCES_FLAG", "project_sources", "reload_loop", "watch_install_hint", "watch_loop"]

SOURCES_FLAG = "--report-sources"
"""The hidden option with which a generation run by ``--watch`` reports the files it
imported (to a JSON file)."""


def project_sources() -> list[str]:
    """The Python files of the modules loaded from outside the standard library,
    site-packages and trio_wsroutes itself: the files whose changes ``--watch`` reacts to."""
    paths = sysconfig.get_paths()
    excluded = {
        str(Path(paths[key]).resolve())
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if key in paths
    }
    excluded.add(str(Path(__file__).resolve().parent))
    sources: set[str] = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str) or not file.endswith(".py"):
            continue
        resolved = str(Path(file).resolve())
        if any(resolved.startswith(prefix + os.sep) for prefix in excluded):
            continue
        if os.sep + "site-packages" + os.sep in resolved:
            continue
        sources.add(resolved)
    return sorted(sources)


def watch_install_hint(
    direct_url: str | None, extras: Sequence[str], cwd: str | os.PathLike[str]
) -> str:
    """The command that installs watchfiles for ``--watch``, for this installation.

    ``direct_url`` is the distribution's ``direct_url.json`` (PEP 610) and ``extras`` its
    ``Provides-Extra`` entries. A project installed from a directory (a checkout) gets
    the ``watch`` extra from that directory, with ``-e`` if it was installed editable
    (``'.[watch]'`` from inside it): ``'trio-wsroutes[watch]'`` would install the package
    from the index over it.
    """
    if "watch" not in extras:
        return "python -m pip install 'watchfiles>=0.21'"
    try:
        info: object = json.loads(direct_url) if direct_url else None
    except ValueError:
        info = None
    if _is_dict(info):
        url = info.get("url")
        dir_info = info.get("dir_info")
        if _is_dict(dir_info) and isinstance(url, str) and url.startswith("file:"):
            path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
            where = "." if path.resolve() == Path(cwd).resolve() else str(path)
            editable = "-e " if dir_info.get("editable") is True else ""
            return f"python -m pip install {editable}'{where}[watch]'"
    return "python -m pip install 'trio-wsroutes[watch]'"


async def watch_loop(child_argv: list[str], app_dir: str) -> None:
    import trio
    import watchfiles

    stop = trio.Event()

    async def stop_on_signal() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                print("trio-wsroutes: stopped watching", file=sys.stderr, flush=True)
                stop.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_signal)
        sources = await _generate_in_child(child_argv) or []
        while not stop.is_set():
            directories = sorted({os.path.dirname(s) for s in sources}) or [app_dir]
            print(
                f"trio-wsroutes: watching {len(directories)} "
                f"director{'y' if len(directories) == 1 else 'ies'} for changes "
                "(Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )
            async for changes in watchfiles.awatch(
                *directories,
                watch_filter=watchfiles.PythonFilter(),
                stop_event=stop,
                recursive=False,
                rust_timeout=1000,
                step=50,
            ):
                listed = ", ".join(
                    f"{_relative(path)} ({change.name})"
                    for change, path in sorted(changes, key=lambda c: (c[1], c[0].value))
                )
                print(f"trio-wsroutes: changed: {listed}", file=sys.stderr, flush=True)
                found = await _generate_in_child(child_argv)
                if found is not None and found != sources:
                    sources = found
                    break  # watch the new set of directories
        nursery.cancel_scope.cancel()


def _relative(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path


async def _generate_in_child(argv: list[str]) -> list[str] | None:
    """Run one generation in a fresh interpreter; return the sources it imported."""
    import trio

    with tempfile.TemporaryDirectory(prefix="trio-wsroutes-") as directory:
        report = Path(directory) / "sources.json"
        command = [sys.executable, "-m", "trio_wsroutes._cli", *argv, SOURCES_FLAG, str(report)]
        result = await trio.run_process(command, check=False)
        if result.returncode != 0:
            print(
                "trio-wsroutes: generation failed; waiting for the next change",
                file=sys.stderr,
                flush=True,
            )
            return None
        try:
            found: object = json.loads(report.read_text())
        except (OSError, ValueError):
            return None
    if not _is_list(found):
        return None
    return [s for s in found if isinstance(s, str)]


def _is_list(value: object) -> TypeGuard[list[object]]:
    return isinstance(value, list)


def _is_dict(value: object) -> TypeGuard[dict[str, object]]:
    return isinstance(value, dict)


async def reload_loop(child_argv: list[str], app_dir: str) -> None:
    """Run ``serve`` in a child process; on a change to a Python file under ``app_dir``,
    stop it gracefully (SIGTERM) and start it again."""
    import trio
    import watchfiles

    stop = trio.Event()
    command = [sys.executable, "-m", "trio_wsroutes._cli", *child_argv]
    async with trio.open_nursery() as nursery:

        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    stop.set()
                    return

        nursery.start_soon(stop_on_signal)
        while not stop.is_set():
            process = await trio.lowlevel.open_process(command)
            async for changes in watchfiles.awatch(
                app_dir,
                watch_filter=watchfiles.PythonFilter(),
                stop_event=stop,
                rust_timeout=1000,
                step=50,
            ):
                listed = ", ".join(sorted({_relative(path) for _, path in changes}))
                print(f"trio-wsroutes: changed: {listed}; restarting", file=sys.stderr, flush=True)
                break
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)  # a graceful stop: 1001 to every client
            await process.wait()
        nursery.cancel_scope.cancel()
