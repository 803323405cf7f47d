"""The npm tools the client-type tests run: tsc, and the AsyncAPI JSON schemas.

``.ci/run`` installs them with ``npm ci`` in ``tests/ts/`` (versions pinned by its
package-lock.json). Missing tools fail the tests under CI (``CI=true``); elsewhere they
fail with the command to run, or skip when there is no npm to run it with.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tests" / "ts"
TSC = TOOLS / "node_modules" / "typescript" / "bin" / "tsc"
ASYNCAPI_SCHEMA = TOOLS / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0.json"
INSTALL = "(cd tests/ts && npm ci)"


def require(tool: Path) -> None:
    """Fail (under CI, or when npm could install it) or skip when ``tool`` is missing."""
    if tool.exists() and shutil.which("node"):
        return
    message = f"{tool.relative_to(ROOT)} is not installed: run {INSTALL}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (.ci/run does this before the tests)")
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip(f"npm is not available here; {message}")
    pytest.fail(message)


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
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run(
        [node, str(TSC), "--pretty", "false", *args],
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
