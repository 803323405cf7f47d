"""The observability guide, the Grafana dashboard and the alert rules name only metrics
the server exports, with their kinds and labels, and the guide describes every one.

Everything is read from ``METRICS`` when the test runs: renaming a metric, changing its
kind or a label breaks the dashboard panel, the alert or the guide's table that uses it
here rather than in a user's Grafana. Every PromQL expression is parsed with a real
PromQL parser (``promql-parser``, the Prometheus grammar).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from trio_wsroutes._metric_catalog import METRICS
from trio_wsroutes._prometheus import PREFIX

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "topics" / "observability.rst"
DASHBOARD = ROOT / "docs" / "grafana" / "trio-wsroutes-dashboard.json"
ALERTS = ROOT / "docs" / "grafana" / "alerts.yml"

Kind = tuple[str, tuple[str, ...]]

# Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = {"job", "instance"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
GRAFANA_INTERVAL = re.compile(r"\$__(rate_)?interval|\$__range")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
ANNOTATION_LABEL = re.compile(r"\$labels\.(\w+)")
NAME_TOKEN = re.compile(rf"\b{PREFIX}\w+")


def exported() -> dict[str, Kind]:
    """Every metric's full name -> (kind, labels), from METRICS."""
    return {PREFIX + spec.name: (spec.kind, spec.labels) for spec in METRICS}


def series() -> dict[str, tuple[str, str]]:
    """Every series name a scrape has -> (its metric, that metric's kind): a histogram
    is only its ``_bucket``, ``_sum`` and ``_count`` series."""
    out: dict[str, tuple[str, str]] = {}
    for name, (kind, _) in exported().items():
        if kind == "histogram":
            out.update({name + suffix: (name, kind) for suffix in HISTOGRAM_SUFFIXES})
        else:
            out[name] = (name, kind)
    return out


# -- the expressions ----------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", ())  # a collapsed row holds its panels


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        rules.extend(group["rules"])
    return rules


def guide_promql() -> list[str]:
    """The expressions of the guide's ``promql`` blocks, split at blank lines."""
    expressions = []
    for block in re.findall(
        r"^\.\. code-block:: promql\n\n((?:(?: {4}.*)?\n)+)", GUIDE.read_text(), re.M
    ):
        expressions += [e.strip() for e in re.split(r"\n\s*\n", block) if e.strip()]
    return expressions


def expressions() -> list[tuple[str, str, set[str]]]:
    """(where, PromQL, labels it shows: legend or annotations) of every expression."""
    found = []
    for panel in panels():
        for target in panel.get("targets", ()):
            legend = set(LEGEND_LABEL.findall(target.get("legendFormat", "")))
            where = f"dashboard panel {panel['title']!r} {target['refId']}"
            found.append((where, GRAFANA_INTERVAL.sub("5m", target["expr"]), legend))
    for rule in alert_rules():
        shown = set(ANNOTATION_LABEL.findall(json.dumps(rule.get("annotations", {}))))
        found.append((f"alert {rule['alert']}", rule["expr"], shown))
    for n, expression in enumerate(guide_promql()):
        found.append((f"guide query {n}", expression, set()))
    return found


EXPRESSIONS = expressions()


def parts(expression: str) -> tuple[list[tuple[str, str | None]], set[str]]:
    """The series an expression selects (name, the function over its range or None),
    and every label name it uses."""
    selected: list[tuple[str, str | None]] = []
    labels: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.Call):
            for arg in node.args:
                if isinstance(arg, promql_parser.MatrixSelector):
                    selected.append((arg.vector_selector.name, node.func.name))
        elif isinstance(node, promql_parser.VectorSelector):
            name = node.name
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    name = matcher.value
                else:
                    labels.add(matcher.name)
            assert name, f"{expression}: a selector without a metric name"
            if not any(s[0] == name for s in selected):
                selected.append((name, None))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                labels.update(node.modifier.matching.labels)
            labels.update(node.modifier.group_labels or ())

    promql_parser.walk(promql_parser.parse(expression), visit)
    return selected, labels


# -- the tests ----------------------------------------------------------------------------


def test_there_is_something_to_check() -> None:
    assert len(EXPRESSIONS) > 30
    assert {where.split()[0] for where, _, _ in EXPRESSIONS} == {"dashboard", "alert", "guide"}


@pytest.mark.parametrize(
    ("where", "expression", "shown"), EXPRESSIONS, ids=[e[0] for e in EXPRESSIONS]
)
def test_expressions_use_exported_series_and_their_labels(
    where: str, expression: str, shown: set[str]
) -> None:
    known = series()
    metrics = exported()
    selected, used = parts(expression)  # raises ValueError on a syntax error
    allowed = set(TARGET_LABELS)
    for name, function in selected:
        assert name in known, f"{where}: {name} is not an exported series"
        metric, kind = known[name]
        allowed.update(metrics[metric][1])
        if name.endswith("_bucket") and kind == "histogram":
            allowed.add("le")
        if function in ("rate", "irate", "increase"):
            assert kind in ("counter", "histogram"), f"{where}: {function}() of a {kind}"
        if kind == "histogram" and name.endswith("_bucket"):
            assert function in ("rate", "increase"), f"{where}: buckets need rate()"
    assert used <= allowed, f"{where}: labels {sorted(used - allowed)} are not exported"
    assert shown <= allowed, f"{where}: shows labels {sorted(shown - allowed)}"


def test_every_name_mentioned_anywhere_is_exported() -> None:
    known = set(series()) | set(exported())
    for path in (GUIDE, DASHBOARD, ALERTS):
        unknown = set(NAME_TOKEN.findall(path.read_text())) - known
        assert not unknown, f"{path.name} names {sorted(unknown)}"


def test_the_guide_tables_describe_every_metric_with_its_kind_and_labels() -> None:
    rows = re.findall(
        rf"^   \* - ``({PREFIX}\w+)``\n     - (\w+)\n     - (.+)$", GUIDE.read_text(), re.M
    )
    documented = {name: (kind, tuple(re.findall(r"``(\w+)``", cell))) for name, kind, cell in rows}
    assert len(documented) == len(rows), "a metric has two rows"
    metrics = exported()
    for name, (kind, labels) in metrics.items():
        assert name in documented, f"the guide's table has no row for {name}"
        assert documented[name][0] == kind, name
        assert set(documented[name][1]) == set(labels), name
    assert set(documented) <= set(metrics)


def test_dashboard_is_importable_with_a_prometheus_input_and_a_route_variable() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    assert [(i["name"], i["type"], i["pluginId"]) for i in board["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")
    ]
    datasource = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids))
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == datasource, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == datasource, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    (route,) = [v for v in board["templating"]["list"] if v["name"] == "route"]
    assert route["datasource"] == datasource
    query = route["query"]["query"]
    match = re.fullmatch(r"label_values\((\w+), (\w+)\)", query)
    assert match is not None, query
    metric, label = match.groups()
    assert label in exported()[metric][1]
    assert route["definition"] == query


def test_alert_rules_are_complete_and_the_guide_explains_each() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        promql_parser.parse_duration(rule["for"])
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
    explained = set(re.findall(r"^``(TrioWsroutes\w+)``$", GUIDE.read_text(), re.M))
    assert explained == set(names)
