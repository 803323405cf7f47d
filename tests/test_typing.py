"""Static type safety, checked by mypy --strict and pyright (strict) on tests/typing/.

A line of a file in tests/typing/ that ends in ``# expect-error`` must get an error from
the checker; every other line must get none. The checkers run once per session.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "typing"
FILES = sorted(CASES.glob("*.py"))
Lines = dict[str, set[int]]


def expected_errors() -> Lines:
    return {
        path.name: {
            number
            for number, line in enumerate(path.read_text().splitlines(), start=1)
            if line.rstrip().endswith("# expect-error")
        }
        for path in FILES
    }


def _collect(pairs: list[tuple[str, int]]) -> Lines:
    found: Lines = {path.name: set() for path in FILES}
    for file, line in pairs:
        found.setdefault(Path(file).name, set()).add(line)
    return found


@pytest.fixture(scope="session")
def mypy_errors() -> Lines:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", *map(str, FILES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    pattern = re.compile(r"^(?P<file>[^:]+\.py):(?P<line>\d+): error:")
    pairs = [
        (found["file"], int(found["line"]))
        for found in map(pattern.match, result.stdout.splitlines())
        if found
    ]
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return _collect(pairs)


@pytest.fixture(scope="session")
def pyright_errors() -> Lines:
    # The pyright of this interpreter's environment, found even when that environment is
    # not activated (``path/to/venv/bin/python -m pytest``), else PATH's.
    pyright = shutil.which("pyright", path=str(Path(sys.executable).parent)) or shutil.which(
        "pyright"
    )
    if pyright is None:
        pytest.fail("pyright is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        # This interpreter's packages, not those of whatever python is on PATH.
        [pyright, "--outputjson", "--pythonpath", sys.executable, *map(str, FILES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(result.stdout)
    pairs = [
        (diag["file"], diag["range"]["start"]["line"] + 1)
        for diag in report["generalDiagnostics"]
        if diag["severity"] == "error"
    ]
    return _collect(pairs)


@pytest.mark.parametrize("case", [path.name for path in FILES])
def test_mypy_flags_exactly_the_expected_lines(case: str, mypy_errors: Lines) -> None:
    assert mypy_errors[case] == expected_errors()[case]


@pytest.mark.parametrize("case", [path.name for path in FILES])
def test_pyright_flags_exactly_the_expected_lines(case: str, pyright_errors: Lines) -> None:
    assert pyright_errors[case] == expected_errors()[case]


def test_every_case_file_expects_some_error() -> None:
    # A case file without a single rejected line would prove nothing about rejection.
    assert all(expected_errors().values())
