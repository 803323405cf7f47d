"""Turn a results file of ``run.py`` into the documentation's tables and chart.

    python bench/report.py [bench/results/full.json]

Writes ``docs/benchmarks-results.inc`` (included by ``docs/benchmarks.rst``: the
machine, the command, the date, the tables) and ``docs/_static/benchmarks.png`` (the
chart; needs matplotlib, from the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import datetime
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import figures
import harness

DOCS = harness.ROOT / "docs"
INCLUDE = DOCS / "benchmarks-results.inc"
CHART = DOCS / "_static" / "benchmarks.png"
ORDER = (
    "native",
    "asgi",
    "hypercorn",
    "fastapi",
    "websockets",
    "websockets-trio",
    "bun",
    "floor",
    "floor-batched",
)
SHORT = {
    "asgi": "trio_wsroutes ASGI (hypercorn-trio)",
    "native": "trio_wsroutes native",
    "hypercorn": "plain ASGI on hypercorn-trio",
    "fastapi": "FastAPI + pydantic, uvicorn",
    "websockets": "websockets on uvloop, raw",
    "websockets-trio": "websockets on Trio, raw",
    "bun": "Bun + Zod",
    "floor": "floor: a bare sock.send loop",
    "floor-batched": "floor, batched per recv",
}
COLORS = {
    "native": "#2a6fdb",
    "asgi": "#7fa7ea",
    "hypercorn": "#9e9e9e",
    "fastapi": "#e39a2d",
    "websockets": "#b5487a",
    "websockets-trio": "#d98cb3",
    "bun": "#3c9d5d",
    "floor": "#555555",
    "floor-batched": "#888888",
}
THROUGHPUT = (
    ("echo", "echo msgs/s"),
    ("fanout-200", "fan-out 200"),
    ("fanout-1000", "fan-out 1 000"),
    ("fanout-200-deflate", "fan-out 200, deflate"),
    ("fanout-1000-deflate", "fan-out 1 000, deflate"),
    ("connect", "handshakes/s"),
)
FANOUT = THROUGHPUT[1:5]
MEMORY = (("idle", "compression off"), ("idle-deflate", "permessage-deflate"))


class Results:
    def __init__(self, data: dict[str, Any]) -> None:
        self.meta: dict[str, Any] = data["meta"]
        self.summary = {(s["system"], s["scenario"]): s for s in data["summary"]}
        self.targets: list[dict[str, Any]] = data["targets"]
        self.runs: list[dict[str, Any]] = data["runs"]
        # Older results files have no ratios: the runs have what they need.
        ratios = data.get("ratios") or figures.rep_ratios(self.runs)
        self.ratios = {(r["peer"], r["scenario"]): r for r in ratios}
        present = {s["system"] for s in data["summary"]}
        self.systems = [s for s in ORDER if s in present]
        self.scenarios = {s["scenario"] for s in data["summary"]}

    def get(self, system: str, scenario: str) -> dict[str, Any] | None:
        cell = self.summary.get((system, scenario))
        return cell if cell is not None and cell["median"] is not None else None

    def limited(self, cell: dict[str, Any]) -> bool:
        """Client-limited in most of its runs: the figure is a lower bound."""
        return bool(cell["client_limited"]) and cell["client_limited"] * 2 >= cell["runs"]


def number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}".replace(",", "\u202f")  # narrow no-break space


def table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[str]], widths: str = ""
) -> str:
    """A list-table; a cell with newlines becomes a line block (one line each)."""
    lines = [f".. list-table:: {title}", "   :header-rows: 1", "   :stub-columns: 1"]
    if widths:
        lines.append(f"   :widths: {widths}")
    lines.append("")
    for row in [header, *rows]:
        for index, cell in enumerate(row):
            lead = "   * - " if index == 0 else "     - "
            parts = cell.split("\n")
            if len(parts) == 1:
                lines.append(lead + cell)
            else:
                lines.append(lead + "| " + parts[0])
                lines.extend("       | " + part for part in parts[1:])
    return "\n".join(lines) + "\n"


def latency(cell: dict[str, Any], prefix: str = "") -> str:
    if cell.get("p50_ms") is None:
        return ""
    digits = 1 if cell["p99_ms"] >= 100 else 2
    return (
        f"{prefix}p50 {number(cell['p50_ms'], digits)} · p99 {number(cell['p99_ms'], digits)} ms"
    )


def throughput_cell(results: Results, system: str, scenario: str) -> str:
    cell = results.get(system, scenario)
    if cell is None:
        return "n/a"
    text = number(cell["median"])
    if results.limited(cell):
        text = f"≥ {text} [#client]_"
    return f"{text}\n{latency(cell)}"


def per_cpu_cell(results: Results, system: str, scenario: str, *, floor: bool = True) -> str:
    """Deliveries per server CPU-second, then microseconds per delivery and, where the
    floor ran, how many times the floor's."""
    cell = results.get(system, scenario)
    if cell is None or not cell.get("per_cpu"):
        return "n/a"
    text = f"{number(cell['per_cpu'])}\n{number(cell['us_per_delivery'], 2)} µs"
    base = results.get("floor", scenario)
    if floor and base and base.get("us_per_delivery") and system != "floor":
        text += f", {cell['us_per_delivery'] / base['us_per_delivery']:.2f}x the floor"
    return text


def memory_cell(results: Results, system: str, scenario: str) -> str:
    cell = results.get(system, scenario)
    if cell is None:
        return "n/a"
    return f"{number(cell['median'], 1)}\n{latency(cell, 'opening: ')}"


def span(summary: dict[str, Any], digits: int = 2) -> str:
    """``median (min-max)``, or the median alone when there is no range."""
    text = number(summary["median"], digits)
    if summary.get("min") is not None and summary["max"] > summary["min"]:
        text += f" ({number(summary['min'], digits)}\u2013{number(summary['max'], digits)})"
    return text


def cost_cell(cell: dict[str, Any]) -> str:
    """Server CPU µs per message: user + system when split, else the total."""
    total = cell.get("us_per_delivery")
    digits = 2 if total is not None and total < 10 else 1
    if cell.get("us_user") is not None:
        total = cell["us_user"] + (cell["us_system"] or 0)
        return (
            f"{number(total, digits)}\nuser {number(cell['us_user'], digits)} · "
            f"system {number(cell['us_system'], digits)}"
        )
    return number(total, digits)


def ratio_cell(results: Results, system: str, scenario: str) -> str:
    if system == figures.REFERENCE:
        return "(reference)"
    found = results.ratios.get((system, scenario))
    if not found or "ratio" not in found:
        return "n/a"
    text = span(found["ratio"])
    reps = found["reps"]
    if len(reps) > 1 or found.get("disturbed_reps"):
        text += "\n" + " ".join(f"{r['ratio']:.2f}{'*' if r['disturbed'] else ''}" for r in reps)
    return text


def steal_cell(cell: dict[str, Any]) -> str:
    if cell.get("steal") is None:
        return "n/a"
    text = f"{cell['steal']:.1%}"
    if cell.get("stolen"):
        text += f"\n{cell['stolen']} run(s) disturbed"
    return text


def syscalls_cell(cell: dict[str, Any]) -> str:
    calls = cell.get("syscalls")
    if not calls:
        return "n/a"
    kinds = [f"{name} {value:.2f}" for name, value in figures.shown_syscalls(calls)]
    return f"{calls['total']:.2f}\n" + "\n".join(kinds)


def cost_table(results: Results) -> str:
    """Per scenario and system: the figure with its range, what each message cost the
    server, the reference's ratio to it repetition by repetition, steal, system calls."""
    cells = [
        (scenario, label, system, cell)
        for scenario, label in THROUGHPUT
        for system in results.systems
        if (cell := results.get(system, scenario)) is not None
    ]
    if not cells:
        return ""
    steal = any(c.get("steal") is not None for *_, c in cells)
    calls = any(c.get("syscalls") for *_, c in cells)
    split = any(c.get("us_user") is not None for *_, c in cells)
    header = [
        "scenario, system",
        "figure: median (min\u2013max)",
        "server CPU µs per message" + (": user · system" if split else ""),
        f"{SHORT[figures.REFERENCE]} / this: median (min\u2013max), then each repetition",
    ]
    header += ["steal (most)"] if steal else []
    header += ["system calls per message"] if calls else []
    rows = []
    for scenario, label, system, cell in cells:
        row = [
            f"{label.replace(' msgs/s', '').replace('handshakes/s', 'handshakes')}\n"
            f"{SHORT[system]}",
            span(cell, 0),
            cost_cell(cell),
            ratio_cell(results, system, scenario),
        ]
        row += [steal_cell(cell)] if steal else []
        row += [syscalls_cell(cell)] if calls else []
        rows.append(row)
    return table(
        "What each message costs: the figure (median and range over the repetitions), "
        "the server's CPU per echoed message, fan-out delivery or handshake, the native "
        "transport's figure over each system's in the same repetition (``*``: a "
        "disturbed repetition, left out of the median)"
        + ("; the most CPU time the hypervisor stole from a measured core" if steal else "")
        + ("; system calls per message, from one repetition under strace" if calls else ""),
        header,
        rows,
    )


def shown(path: Path) -> str:
    try:
        return str(path.relative_to(harness.ROOT))
    except ValueError:
        return str(path)


def target_rows(results: Results) -> list[list[str]]:
    rows = []
    for t in results.targets:
        name = f"{t['number']}. {t['target']}"
        if t["value"] is None:
            rows.append([name, "not measured", "", t.get("caveat") or ""])
            continue
        unit = t.get("unit", "x")
        measured = f"{t['value']:.2f}{unit}"
        if len(t.get("per_rep") or ()) > 1:
            measured += f"\nrepetitions {min(t['per_rep']):.2f}-{max(t['per_rep']):.2f}"
        if t["bound"] is None:
            bound, verdict = "(reported)", "reported"
        else:
            bound = ("≥ " if t["kind"] == "min" else "≤ ") + f"{t['bound']:g}{unit}"
            verdict = "met" if t["met"] else "**missed**"
        notes = [t["caveat"]] if t.get("caveat") else []
        for cell in t.get("cells", ()):
            notes.append(
                f"{cell['scenario']}: throughput {cell['throughput_ratio']:.2f}x, p99 "
                f"{number(cell['p99_ms'], 2)} vs {number(cell['baseline_p99_ms'], 2)} ms"
                + ("" if cell["judged"] else " (not judged)")
            )
        rows.append([name, measured, bound, "\n".join([verdict, *notes])])
    return rows


def floor_paragraph(results: Results) -> str:
    parts = []
    for scenario, label in FANOUT[:2]:
        floor = results.get("floor", scenario)
        if floor is None or not floor.get("us_per_delivery"):
            continue
        text = (
            f"at {label.replace('fan-out ', '')} subscribers the floor spends "
            f"{number(floor['us_per_delivery'], 2)} µs of server CPU per delivery "
            f"({number(floor['median'])} deliveries/s, its server "
            f"{floor['server_cpu']:.0%} busy)"
        )
        others = []
        for system in ("floor-batched", "native", "asgi", "fastapi", "websockets", "bun"):
            cell = results.get(system, scenario)
            if cell and cell.get("us_per_delivery"):
                ratio = cell["us_per_delivery"] / floor["us_per_delivery"]
                others.append(
                    f"{SHORT[system]} {number(cell['us_per_delivery'], 2)} µs ({ratio:.2f}x)"
                )
        if others:
            text += "; " + ", ".join(others)
        parts.append(text)
    if not parts:
        return ""
    return (
        "**The floor.** Server CPU per delivery against a bare Python loop that hands one "
        "pre-framed message to every subscriber's socket (``bench/floor.py``): "
        + "; ".join(parts)
        + ".\n"
    )


def cpu_description(machine: dict[str, Any]) -> str:
    text = machine["cpu"] or "unknown CPU"
    if machine.get("cpu_mhz"):
        text += f", {float(machine['cpu_mhz']):,.0f} MHz"
    if machine.get("cache"):
        text += f", {machine['cache']} cache"
    if machine.get("virtual"):
        text += ", a virtual machine"
    return text


def render_include(results: Results, source: Path) -> str:
    meta = results.meta
    m = meta["machine"]
    params = meta["params"]
    date = datetime.datetime.fromisoformat(meta["date"]).strftime("%Y-%m-%d")
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    load = f"load average {m['loadavg_at_start']:.2f} at the start"
    if meta.get("loadavg_at_end") is not None:
        load += f", {meta['loadavg_at_end']:.2f} at the end"
    out = [
        f".. Generated by ``python bench/report.py {shown(source)}``;"
        " edit bench/report.py, not this file.",
        "",
        f"Measured on {date} with:",
        "",
        ".. code-block:: console",
        "",
        f"    $ {meta['command']}",
        "",
        f"* **Machine**: {m['cores']} cores ({cpu_description(m)}), "
        f"{m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}"
        f"{' (' + m['python_build'] + ')' if m.get('python_build') else ''}; "
        f"{meta['pinning']}; {meta['client_processes']} load-generator process(es); {load}.",
        f"* **Runs**: {params['reps']} repetition{'s' if params['reps'] != 1 else ''} of "
        "every system and scenario (the floors: fan-out without compression only), each on a "
        f"fresh server process, {params['warmup']:g} s warm-up then a {params['seconds']:g} s "
        f"window; medians. Echo: {params['echo_connections']} connections; fan-out: at most "
        f"{params['inflight']} messages in flight; handshakes: "
        f"{params['connect_concurrency']} concurrent; idle memory: "
        f"{number(params['idle_connections'])} connections. "
        f"The whole run took {number(meta.get('elapsed_seconds', 0) / 60, 0)} minutes.",
        f"* **Versions**: {versions}.",
        "",
    ]
    cells = list(results.summary.values())
    calm = sum(c["runs"] - c.get("disturbed", 0) - c.get("failed", 0) for c in cells)
    total = sum(c["runs"] for c in cells)
    if meta["mode"] != "full" or calm < total * 0.75:
        out += [
            ".. warning::",
            "",
            f"   These figures come from a ``{meta['mode']}`` run "
            f"({params['reps']} repetition{'s' if params['reps'] != 1 else ''}, "
            f"{params['seconds']:g} s windows) in which {total - calm} of {total} runs were "
            "disturbed by other processes on the measured cores (see *Noise* below). "
            "Ratios within the run compare like with like; absolute figures may be low and "
            "the spread wide. ``nox -s bench -- full`` on a quiet machine replaces them.",
            "",
        ]
    headline = (
        ("echo", "echo msgs/s", throughput_cell),
        ("fanout-200", "fan-out 200, deliveries/s", throughput_cell),
        ("fanout-200", "fan-out 200, deliveries per server CPU-second", per_cpu_cell),
        ("connect", "handshakes/s", throughput_cell),
        ("idle", "idle KiB/connection", memory_cell),
        ("idle-deflate", "idle KiB/connection, permessage-deflate", memory_cell),
    )
    rows = [
        [SHORT[system], *(render(results, system, sc) for sc, _, render in headline)]
        for system in results.systems
    ]
    out.append(
        table(
            "The figures of the targets (medians; each throughput cell with its p50 · p99 "
            "latency: echo round trip, fan-out publish to delivery, handshake TCP connect to "
            "101; idle cells with the handshake latency while the connections opened)",
            ["system", *(label for _, label, _ in headline)],
            rows,
        )
    )
    rows = [
        [SHORT[system], *(throughput_cell(results, system, sc) for sc, _ in FANOUT[1:])]
        for system in results.systems
    ]
    out.append(
        table(
            "More fan-out: deliveries/s (median) and p50 · p99 latency, publish to delivery",
            ["system", *(label for _, label in FANOUT[1:])],
            rows,
        )
    )
    rows = [
        [SHORT[system], *(per_cpu_cell(results, system, sc) for sc, _ in FANOUT)]
        for system in results.systems
    ]
    out.append(
        table(
            "Fan-out per server CPU-second: deliveries per second of the server's CPU time, "
            "then server CPU µs per delivery and that against the floor (medians)",
            ["system", *(label for _, label in FANOUT)],
            rows,
        )
    )
    paragraph = floor_paragraph(results)
    if paragraph:
        out.append(paragraph)
    costs = cost_table(results)
    if costs:
        out.append(costs)
    out.append(
        table(
            "Targets: ratios of this run's medians",
            ["target", "measured", "target", "verdict"],
            target_rows(results),
            widths="40 14 10 36",
        )
    )
    noise = []
    for scenario, label in (*THROUGHPUT, *MEMORY):
        spreads = [
            cell["spread"]
            for s in results.systems
            if (cell := results.get(s, scenario)) is not None and cell["spread"] is not None
        ]
        if spreads:
            noise.append(f"{label.replace(' msgs/s', '')} {min(spreads):.0%}-{max(spreads):.0%}")
    others = [r["other_load"] for r in results.runs if r.get("other_load") is not None]
    limited = sorted(
        f"{SHORT[c['system']]} ({c['scenario']})"
        for c in results.summary.values()
        if c["median"] is not None and results.limited(c)
    )
    disturbed = sum(c.get("disturbed", 0) for c in results.summary.values())
    steals = [r["steal"] for r in results.runs if r.get("steal") is not None]
    stolen = ""
    if steals:
        stolen = (
            f" CPU time the hypervisor stole from a measured core: median "
            f"{harness.median(steals):.1%}, at most {max(steals):.1%}."
        )
    failed = sum(c.get("failed", 0) for c in results.summary.values())
    runs = sum(c["runs"] for c in results.summary.values())
    out += [
        f"**Noise.** Spread of the repetitions used, (max - min) / median, per scenario "
        f"across systems: {'; '.join(noise)}. CPU used by other processes on the two "
        f"measured cores during the windows: median "
        f"{harness.median(others) if others else 0:.0%}, at most "
        f"{max(others, default=0):.0%} of a core.{stolen} {disturbed} of {runs} runs were "
        f"disturbed (other processes took 25% of a core or more during the window"
        f"{', or the hypervisor 5% of one' if steals else ''}): they are kept in "
        f"the results file and left out of the medians. {failed} failed.",
        "",
    ]
    if limited:  # a footnote nothing refers to is a Sphinx warning
        out += [
            ".. [#client] The load generator's core was at least 90% busy in most "
            "repetitions: the figure is what one client core could take, a lower bound for "
            f"the server. Here: {', '.join(limited)}.",
            "",
        ]
    return "\n".join(out)


def bars(
    ax: Any,
    results: Results,
    groups: Sequence[tuple[str, str]],
    field: str,
    *,
    log: bool,
    digits: int = 0,
) -> None:
    """Horizontal bars, one row per system that has a figure, one bar per scenario."""
    groups = [g for g in groups if g[0] in results.scenarios]
    systems = [
        system
        for system in results.systems[::-1]
        if any((results.get(system, g[0]) or {}).get(field) for g in groups)
    ]
    height = 0.8 / max(1, len(groups))
    for g, (scenario, label) in enumerate(groups):
        for i, system in enumerate(systems):
            cell = results.get(system, scenario)
            value = cell.get(field) if cell else None
            if not value:
                continue
            y = i + (g - (len(groups) - 1) / 2) * height
            limited = field == "median" and results.limited(cell)  # type: ignore[arg-type]
            ax.barh(
                y,
                value,
                height=height * 0.9,
                color=COLORS[system],
                alpha=1.0 - 0.18 * g,
                hatch="//" if limited else None,
                edgecolor="white" if limited else None,
            )
            text = f"{'≥' if limited else ''}{number(value, digits)}"
            if label:
                text += f"  {label}"
            ax.text(value, y, " " + text, va="center", fontsize=7)
    ax.set_yticks(range(len(systems)))
    ax.set_yticklabels([SHORT[s] for s in systems], fontsize=8)
    if log:
        log_axis(ax)
    ax.margins(x=0.4)
    ax.grid(axis="x", alpha=0.3)


def log_axis(ax: Any) -> None:
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())


def target_bars(ax: Any, results: Results) -> None:
    """Each bounded target as measured / bound (bound / measured for an upper bound), so
    that 1 is the target and more is better; the latency target only once it was judged."""
    rows = []
    for t in results.targets:
        if t["bound"] is None or t["value"] is None or not t["value"]:
            continue
        score = t["value"] / t["bound"] if t["kind"] == "min" else t["bound"] / t["value"]
        rows.append((f"{t['number']}. {t['target']}", score, t))
    rows = rows[::-1]
    for i, (_, score, t) in enumerate(rows):
        ax.barh(i, score, height=0.7, color="#3c9d5d" if t["met"] else "#c8553d")
        text = f" {t['value']:.2f}{t.get('unit', 'x')} (target {t['bound']:g})"
        ax.text(score, i, text, va="center", fontsize=7)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([textwrap.fill(r[0], 48) for r in rows], fontsize=7)
    ax.set_xlim(0, max([2.0, *(r[1] * 1.35 for r in rows)]))
    ax.margins(x=0.6)
    ax.grid(axis="x", alpha=0.3)


def render_chart(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(14, 13))
    short = tuple((s, label.replace("fan-out ", "")) for s, label in FANOUT)
    panels = (
        ("Echo, msgs/s", lambda ax: bars(ax, results, (("echo", ""),), "median", log=True)),
        ("Handshakes/s", lambda ax: bars(ax, results, (("connect", ""),), "median", log=True)),
        ("Fan-out, deliveries/s", lambda ax: bars(ax, results, short, "median", log=True)),
        (
            "Fan-out, deliveries per server CPU-second",
            lambda ax: bars(ax, results, short, "per_cpu", log=True),
        ),
        (
            "Idle memory, KiB/connection (lower is better)",
            lambda ax: bars(
                ax,
                results,
                (("idle", "off"), ("idle-deflate", "deflate")),
                "median",
                log=False,
                digits=1,
            ),
        ),
        ("Targets: figure / target (1: just met; right is better)", None),
    )
    for ax, (title, draw) in zip(axes.flat, panels, strict=True):
        if draw is None:
            target_bars(ax, results)
        else:
            draw(ax)
        ax.set_title(title, fontsize=10)
    meta = results.meta
    date = datetime.datetime.fromisoformat(meta["date"]).strftime("%Y-%m-%d")
    fig.suptitle(
        f"trio_wsroutes and peers, {meta['machine']['cores']} cores, {date} "
        f"({meta['mode']} run, medians of {meta['params']['reps']}; "
        "hatched: the load generator was the limit)",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", type=Path, nargs="?", default=harness.RESULTS / "full.json")
    parser.add_argument("--include", type=Path, default=INCLUDE)
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args(argv)
    source = args.results.resolve()
    results = Results(harness.read_json(source))
    args.include.write_text(render_include(results, source))
    render_chart(results, args.chart)
    print(f"wrote {args.include} and {args.chart}")


if __name__ == "__main__":
    main()
