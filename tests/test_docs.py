"""The documentation's code: every Python block is a real, type-checked, executed file.

Docs pages include Python only with ``literalinclude`` from ``docs/snippets/`` (their
``test_*`` files are collected by pytest like any test). Here: no page inlines Python,
every snippet runs, ``mypy --strict`` accepts them all, and the README's Python blocks run
and type-check too.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SNIPPETS = DOCS / "snippets"
PAGES = sorted(DOCS.rglob("*.rst"))
GUIDE_SNIPPETS = sorted(
    p for p in (SNIPPETS / "guides").glob("*.py") if not p.name.startswith("test_")
)
FENCED_PYTHON = re.compile(r"```python\n(.*?)```", re.DOTALL)


def test_pages_include_python_only_from_snippet_files() -> None:
    offenders = []
    for page in PAGES:
        text = page.read_text()
        if re.search(r"\.\. code-block:: (python|py|pycon)\b", text):
            offenders.append(page.name)
        # A bare "::" literal block would be highlighted as Python.
        if re.search(r"[^:]::\n\n {4}\S", text):
            offenders.append(page.name)
    assert offenders == []


def test_every_included_file_exists() -> None:
    for page in PAGES:
        for target in re.findall(r"\.\. literalinclude:: (\S+)", page.read_text()):
            assert (page.parent / target).resolve().is_file(), f"{page.name}: {target}"


@pytest.mark.parametrize("snippet", GUIDE_SNIPPETS, ids=lambda p: p.name)
def test_guide_snippets_run(snippet: Path) -> None:
    runpy.run_path(str(snippet))


def readme_python() -> str:
    return "\n\n".join(FENCED_PYTHON.findall((ROOT / "README.md").read_text()))


def test_readme_python_runs_and_its_test_passes() -> None:
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(readme_python(), "README.md", "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert tests, "the README shows a test; it must run here"
    for test in tests:
        trio.run(test)


def test_snippets_and_readme_type_check(tmp_path: Path) -> None:
    readme = tmp_path / "readme_code.py"
    readme.write_text(readme_python())
    files = [str(p) for p in sorted(SNIPPETS.rglob("*.py"))] + [str(readme)]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *files],
        cwd=ROOT,
        env={**os.environ, "MYPYPATH": str(SNIPPETS / "tutorial")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
