"""Helpers for the generated client's tests: tsc's flags, and building the runtime's JS.

``trio_wsroutes/_typegen/client_runtime.js`` is what tsc emits for
``client_runtime.ts``; after editing the TypeScript, rebuild it with::

    python -m tests._client_ts

(``tests/test_client_ts.py`` fails while it is stale.)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from tests import _typescript

RUNTIME_TS = _typescript.ROOT / "trio_wsroutes" / "_typegen" / "client_runtime.ts"
RUNTIME_JS = RUNTIME_TS.with_suffix(".js")
REBUILD = "python -m tests._client_ts"

# The emit options the generated JavaScript matches: what a project compiling the
# TypeScript client for browsers uses (ES2022 keeps class fields and #private as written).
EMIT = [
    "--target",
    "es2022",
    "--module",
    "esnext",
    "--moduleResolution",
    "bundler",
    "--lib",
    "es2022,dom",
    "--newLine",
    "lf",
    "--verbatimModuleSyntax",
    "--erasableSyntaxOnly",
    "--isolatedModules",
]

# Every strictness flag a project may turn on: the generated client compiles under all.
STRICTEST = [
    "--strict",
    "--exactOptionalPropertyTypes",
    "--noUncheckedIndexedAccess",
    "--noImplicitReturns",
    "--noImplicitOverride",
    "--noUnusedLocals",
    "--noUnusedParameters",
    "--noPropertyAccessFromIndexSignature",
    "--noFallthroughCasesInSwitch",
]


def compile_runtime(directory: Path) -> str:
    """tsc's output for ``client_runtime.ts`` (compiled in ``directory``)."""
    from tests.typegen import app
    from trio_wsroutes import generate_websocket_types

    (directory / "websocket-types.ts").write_text(generate_websocket_types(app.server))
    shutil.copy(RUNTIME_TS, directory / "client_runtime.ts")
    status, _, output = _typescript.tsc(
        *STRICTEST,
        *EMIT,
        "--outDir",
        "out",
        "client_runtime.ts",
        "websocket-types.ts",
        cwd=directory,
    )
    if status != 0:
        raise AssertionError(f"tsc refused client_runtime.ts:\n{output}")
    return (directory / "out" / "client_runtime.js").read_text()


def main() -> None:
    problem = _typescript.ensure_tools()
    if problem is not None:
        sys.exit(problem)
    with tempfile.TemporaryDirectory() as directory:
        text = compile_runtime(Path(directory))
    if RUNTIME_JS.exists() and RUNTIME_JS.read_text() == text:
        print(f"{RUNTIME_JS.relative_to(_typescript.ROOT)} is up to date")
    else:
        RUNTIME_JS.write_text(text)
        print(f"wrote {RUNTIME_JS.relative_to(_typescript.ROOT)}")


if __name__ == "__main__":
    main()
