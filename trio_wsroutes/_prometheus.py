"""The Prometheus text exposition of a server's metrics, with ``prometheus-client``.

The engine counts with plain integers (``_metrics.py``); at scrape time a collector
turns a :data:`~trio_wsroutes._metrics.Snapshot` into metric families, so nothing on
the hot path takes ``prometheus-client``'s locks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from ._metrics import Snapshot

__all__ = ["PREFIX", "check_available", "render"]

PREFIX: Final = "trio_wsroutes_"
"""The prefix of every exported metric's name."""


def check_available() -> None:
    """Raise :class:`ImportError` with the extra to install if ``prometheus-client`` is
    missing (at server construction, not at the first scrape)."""
    try:
        import prometheus_client  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError as exc:
        raise ImportError(
            "the metrics option needs prometheus-client: pip install 'trio-wsroutes[metrics]'"
        ) from exc


class _SnapshotCollector:
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        for name, metric in self._snapshot["metrics"].items():
            labels: list[str] = metric["labels"]
            width = len(labels)
            kind = metric["kind"]
            full = PREFIX + name
            family: Any
            if kind == "counter":
                family = CounterMetricFamily(full, metric["help"], labels=labels)
            elif kind == "gauge":
                family = GaugeMetricFamily(full, metric["help"], labels=labels)
            else:
                family = HistogramMetricFamily(full, metric["help"], labels=labels)
            for sample in metric["samples"]:
                values = [str(v) for v in sample[:width]]
                value = sample[width]
                if kind == "histogram":
                    family.add_metric(
                        values, buckets=_cumulative(value), sum_value=float(value["sum"])
                    )
                else:
                    family.add_metric(values, float(value))
            yield family


def _cumulative(histogram: dict[str, Any]) -> list[tuple[str, float]]:
    buckets: list[tuple[str, float]] = []
    seen = 0
    bounds: list[float] = histogram["bounds"]
    counts: list[int] = histogram["counts"]
    for bound, count in zip(bounds, counts, strict=False):
        seen += count
        buckets.append((_le(bound), float(seen)))
    buckets.append(("+Inf", float(seen + counts[-1])))
    return buckets


def _le(bound: float) -> str:
    # Prometheus' own clients write bucket bounds as floats ("0.005", "1.0").
    return repr(float(bound))


def render(snapshot: Snapshot, *, process_metrics: bool = True) -> tuple[bytes, str]:
    """The text exposition (format 0.0.4) of ``snapshot`` and its content type; with
    ``process_metrics``, followed by ``prometheus-client``'s default registry (process,
    platform, garbage collector, and the application's own metrics)."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry
    from prometheus_client.exposition import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))  # pyright: ignore[reportArgumentType]
    body = generate_latest(registry)
    if process_metrics:
        body += generate_latest(REGISTRY)
    return body, CONTENT_TYPE_LATEST
