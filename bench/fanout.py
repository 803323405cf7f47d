"""Fan-out only: ``run.py --scenarios fanout-200,fanout-1000,...`` (kept for its old
command line).

    python bench/fanout.py                        # 200 subscribers, short mode
    python bench/fanout.py --mode full --scenarios fanout-1000,fanout-1000-deflate

One publisher keeps at most 8 messages in flight to 200 or 1 000 subscribers; see
``run.py`` and ``loadgen.py``.
"""

from __future__ import annotations

import sys

import run

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--scenarios" not in args:
        args = ["--scenarios", "fanout-200,fanout-200-deflate", *args]
    run.main([*args, "--out", str(run.harness.RESULTS / "fanout.json")])
