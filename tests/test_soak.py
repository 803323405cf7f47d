"""A short soak over a real hypercorn (the long one is ``python bench/soak.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from soak import soak


async def test_short_soak_delivers_everything_and_leaks_nothing() -> None:
    report = await soak(seconds=3, stayers=12, churners=12, slow_readers=2, seed=7)
    assert report.failures(rss_slack_kib=32 * 1024) == [], attrs.asdict(report)
    assert report.stayers == 12
    assert report.delivered > 0
    assert report.churn_connections > 50
    assert report.bad_inputs_sent > 20
