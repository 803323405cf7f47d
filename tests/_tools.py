"""One rule for tests that need a tool pip cannot install (redis-server, chromium, ...).

On a developer's machine a missing tool skips the test with a one-line reason, so
``python -m pip install -e '.[test]' && python -m pytest`` passes with Python alone.
Under CI (``CI=true``, which ``.ci/run`` exports after installing every tool) the same
absence fails the test: CI must run everything.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def under_ci() -> bool:
    """Whether this run is CI's (``CI=true``), where no test may be skipped for a tool."""
    return os.environ.get("CI") == "true"


def missing_tool(reason: str) -> NoReturn:
    """Skip the running test because of ``reason`` (one line), or fail it under CI."""
    if under_ci():
        pytest.fail(f"CI must run this test: {reason}", pytrace=False)
    pytest.skip(reason)
