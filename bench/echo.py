"""Echo only: ``run.py --scenarios echo`` (kept for its old command line).

    python bench/echo.py                          # short mode, every system
    python bench/echo.py --mode full --systems asgi,hypercorn,native

Each system answers a validated echo (``servers.py``, ``bun/server.ts``); see ``run.py``.
"""

from __future__ import annotations

import sys

import run

if __name__ == "__main__":
    run.main(
        ["--scenarios", "echo", "--out", str(run.harness.RESULTS / "echo.json"), *sys.argv[1:]]
    )
