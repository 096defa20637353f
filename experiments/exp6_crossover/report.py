"""Report of experiment 6 (crossover), from the result folder alone. Every point is analysed as
an experiment 4 rung (capacity at the shared bound, the ceiling model's prediction); this
arranges them per factor: capacity of each build against the factor's value, measured and
predicted, async's advantage at each value, and where it falls below the threshold. Rebuildable:

    python -m experiments report results/<run folder>
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.exp4_ladder import report as ladder  # noqa: E402
from experiments.reporting import (  # noqa: E402
    Report,
    fmt,
    footer_lines,
    hardware_section,
    header_lines,
    write_files,
)

# Capacities an advantage is computed from: found, or held with the step budget spent. Not
# "every rate passed" (above_range): that is the protocol's max_rate, not the build's
# capacity, and two of them would read as "no advantage".
USABLE = ("found", "unfinished")


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def advantage(async_rps: float | None, sync_rps: float | None) -> float | None:
    """async's capacity over sync's, minus 1 (0.10: async carries 10 % more)."""
    a, s = _num(async_rps), _num(sync_rps)
    return a / s - 1 if a is not None and s else None


def crossing(points: list[tuple[float, float | None]], threshold: float) -> dict[str, Any]:
    """Where an advantage, over increasing factor values, first falls below `threshold`:
    linearly interpolated between the last value at or above it and the first below it.
    kind: "crosses" (at `value`, between `between`), "below" (already at the first value),
    "above" (never, up to the last value), "unknown" (fewer than one advantage known)."""
    known = [(v, a) for v, a in points if a is not None]
    if not known:
        return {"kind": "unknown"}
    if known[0][1] < threshold:
        return {"kind": "below", "value": known[0][0], "advantage": known[0][1]}
    for (v0, a0), (v1, a1) in zip(known, known[1:], strict=False):
        if a0 >= threshold > a1:
            at = v0 + (a0 - threshold) / (a0 - a1) * (v1 - v0)
            return {"kind": "crosses", "value": at, "between": [v0, v1],
                    "advantages": [a0, a1]}
    return {"kind": "above", "value": known[-1][0], "advantage": known[-1][1]}


def _cap(row: dict | None) -> tuple[float | None, str | None]:
    """(capacity an advantage may use, search status); an above-range capacity is shown as a
    lower bound but never compared."""
    if not row or row.get("capacity_status") not in USABLE:
        return None, (row or {}).get("capacity_status")
    return _num(row.get("capacity_rps")), row["capacity_status"]


def factor_series(rows: dict, plan: dict) -> dict[str, Any]:
    """Per factor and tier: each value's capacities, predictions and advantages, and the
    crossing, measured and predicted."""
    points, threshold = plan["points"], plan["threshold"]
    out: dict[str, Any] = {}
    for fname, f in plan["factors"].items():
        per_tier = {}
        for tier in plan["tiers"]:
            names = {p["value"]: name for name, p in points.items()
                     if p["tier"] == tier and p["factor"] == fname}
            names[f["default"]] = f"baseline-{tier}"
            series = []
            for value in sorted(names):
                name = names[value]
                sync, async_ = rows.get((name, "sync")), rows.get((name, "async"))
                (cs, ss), (ca, sa) = _cap(sync), _cap(async_)
                ps = _num((sync or {}).get("predicted_rps"))
                pa = _num((async_ or {}).get("predicted_rps"))
                series.append({"value": value, "variant": name,
                               "sync_rps": cs, "async_rps": ca,
                               # as the search left it, whatever its status: for the table
                               "sync_capacity_rps": _num((sync or {}).get("capacity_rps")),
                               "async_capacity_rps": _num((async_ or {}).get("capacity_rps")),
                               "sync_status": ss, "async_status": sa,
                               "sync_predicted_rps": ps, "async_predicted_rps": pa,
                               "advantage": advantage(ca, cs),
                               "predicted_advantage": advantage(pa, ps)})
            per_tier[tier] = {
                "series": series,
                "crossing": crossing([(p["value"], p["advantage"]) for p in series], threshold),
                "predicted_crossing": crossing(
                    [(p["value"], p["predicted_advantage"]) for p in series], threshold)}
        out[fname] = per_tier
    return out


def analyse(folder: str | Path) -> dict[str, Any]:
    run = Path(folder)
    res = ladder.analyse(run)
    plan = (res["manifest"].get("ladder") or {}).get("crossover")
    if not plan:
        raise ValueError(f"{run}: no crossover plan in the manifest (ladder.crossover)")
    rows = {(r["variant"], r["arch"]): r for r in res["rows"] if r["arrival"] == "spread"}
    res["plan"] = plan
    res["factors"] = factor_series(rows, plan)
    res["headline"] = _headline(res)
    return res


def _headline(res: dict) -> dict[str, Any]:
    out = {}
    for fname, per_tier in res["factors"].items():
        for tier, s in per_tier.items():
            c = s["crossing"]
            out[f"{fname}/{tier}"] = {"kind": c["kind"],
                                      "value": None if c.get("value") is None
                                      else round(c["value"], 2)}
    return {"threshold": res["plan"]["threshold"], "crossing": out}


def headline(res: dict) -> dict[str, Any]:
    """Per factor and tier, where async's advantage falls below the threshold."""
    return res["headline"]


# ---------------------------------------------------------------------------------- plot


def _plot(run: Path, res: dict) -> str | None:
    factors = res["factors"]
    if not factors:
        return None
    n = len(factors)
    cols = 2 if n > 1 else 1
    rows_n = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(6.5 * cols, 4.2 * rows_n), squeeze=False)
    styles = {("sync", "default"): ("tab:blue", "o"), ("sync", "best"): ("tab:cyan", "s"),
              ("async", "default"): ("tab:red", "o"), ("async", "best"): ("tab:orange", "s")}
    for k, (fname, per_tier) in enumerate(factors.items()):
        ax = axes[k // cols][k % cols]
        f = res["plan"]["factors"][fname]
        for tier, s in per_tier.items():
            xs = [p["value"] for p in s["series"]]
            for arch in ("sync", "async"):
                color, marker = styles[(arch, tier)]
                ax.plot(xs, [p[f"{arch}_rps"] or math.nan for p in s["series"]], color=color,
                        marker=marker, label=f"{arch} {tier} measured")
                ax.plot(xs, [p[f"{arch}_predicted_rps"] or math.nan for p in s["series"]],
                        color=color, ls="--", lw=0.9, label=f"{arch} {tier} predicted")
            c = s["crossing"]
            if c["kind"] == "crosses":
                ax.axvline(c["value"], color="grey", ls=":", lw=1)
                ax.text(c["value"], ax.get_ylim()[1], f" {tier}: {c['value']:.3g}", fontsize=7,
                        va="top")
        positive = [p["value"] for s in per_tier.values() for p in s["series"] if p["value"] > 0]
        if positive and max(positive) / min(positive) > 20:
            ax.set_xscale("symlog", linthresh=min(positive))
        ax.set_yscale("log")
        ax.set_xlabel(f"{f['what']} ({f['unit']})", fontsize=8)
        ax.set_ylabel("capacity req/s (p99 bound)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for k in range(n, rows_n * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(f"Capacity against each factor; dotted: async's advantage falls below "
                 f"{res['plan']['threshold']:.0%}", fontsize=9)
    fig.tight_layout()
    fig.savefig(run / "plot_crossover.png", dpi=90)
    plt.close(fig)
    return "plot_crossover.png"


# ------------------------------------------------------------------------------ markdown


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.0%}"


def crossing_sentence(c: dict, f: dict, threshold: float) -> str:
    unit = f["unit"]
    if c["kind"] == "crosses":
        v0, v1 = c["between"]
        return (f"falls below {threshold:.0%} at about **{c['value']:.3g} {unit}** (between "
                f"{v0:g} {unit}, {_pct(c['advantages'][0])}, and {v1:g} {unit}, "
                f"{_pct(c['advantages'][1])})")
    if c["kind"] == "below":
        return (f"is below {threshold:.0%} already at {c['value']:g} {unit} "
                f"({_pct(c['advantage'])})")
    if c["kind"] == "above":
        return (f"stays above {threshold:.0%} up to {c['value']:g} {unit} "
                f"({_pct(c['advantage'])} there)")
    return "cannot be computed (no point with both capacities)"


def _cap_cell(p: dict, arch: str) -> str:
    v, status, raw = p[f"{arch}_rps"], p[f"{arch}_status"], p.get(f"{arch}_capacity_rps")
    if v is not None:
        return fmt(v)
    if status == "above_range" and raw is not None:
        return f"≥ {fmt(raw)} (every rate passed)"
    return f"n/a ({status})" if status else "n/a"


def _factor_lines(res: dict) -> list[str]:
    plan, threshold = res["plan"], res["plan"]["threshold"]
    lines = ["## Where async's advantage falls", "",
             "Advantage = async's capacity / sync's capacity - 1, same tier of builds, at the "
             "shared p99 bound; the crossing is interpolated linearly between the two values "
             "around it. The predicted one applies the ceiling model to each point's own "
             "measurements.", ""]
    rules = []
    for fname, per_tier in res["factors"].items():
        f = plan["factors"][fname]
        lines += [f"### {f['what']} ({fname}, {f['unit']}; default {f['default']:g})", "",
                  "| value | tier | sync req/s | async req/s | advantage | predicted sync | "
                  "predicted async | predicted advantage |", "|---" * 8 + "|"]
        for tier, s in per_tier.items():
            for p in s["series"]:
                lines.append(f"| {p['value']:g} | {tier} | {_cap_cell(p, 'sync')} | "
                             f"{_cap_cell(p, 'async')} | "
                             f"{_pct(p['advantage'])} | {fmt(p['sync_predicted_rps'])} | "
                             f"{fmt(p['async_predicted_rps'])} | "
                             f"{_pct(p['predicted_advantage'])} |")
        lines.append("")
        for tier, s in per_tier.items():
            measured = crossing_sentence(s["crossing"], f, threshold)
            predicted = crossing_sentence(s["predicted_crossing"], f, threshold)
            lines.append(f"- {tier} builds: async's advantage {measured}; predicted: "
                         f"{predicted.replace('**', '')}.")
            rules.append(f"- {f['what']}, {tier} builds: async's advantage {measured}.")
        lines.append("")
    return [*lines, "## Rule of thumb", "",
            "Measured on this machine, one factor at a time around the default (the others at "
            "theirs):", "", *rules, ""]


def render(res: dict, run: Path, plot: str | None) -> str:
    lines = header_lines(res["manifest"], run)
    lines += ["## The points", "",
              "Each point is one value of one factor with one tier of builds (`default`: the "
              "lab's; `best`: each architecture's best build), deployed, verified, probed, given "
              "the step load and searched for its capacity, both architectures; the baseline "
              "(every factor at its default) is shared by all factors. The default build was "
              "redeployed at the end.", "",
              "| point | factor | value | tier | deploy vars |", "|---|---|---|---|---|"]
    for name, p in res["plan"]["points"].items():
        v = res["variants"].get(name, {})
        value = "default" if p["value"] is None else f"{p['value']:g}"
        lines.append(f"| {name} | {p['factor'] or '(baseline)'} | {value} | {p['tier']} | "
                     f"`{json.dumps(v.get('deploy_vars') or {})}` |"
                     + (f" **not measured: {v['failed']}**" if v.get("failed") else ""))
    lines += ["", *_factor_lines(res)]
    if plot:
        lines += [f"![capacity against each factor]({plot})", ""]
    lines += ladder.capacity_lines(res)
    lines += ["## The ceiling model per point", ""]
    lines += [f"- {r['variant']}/{r['arch']}: {r['model_sentence']}" for r in res["rows"]
              if r["arrival"] == "spread"]
    lines += ["", *hardware_section(run), *footer_lines()]
    return "\n".join(lines)


def write_report(folder: str | Path, res: dict[str, Any]) -> Report:
    run = Path(folder)
    plot = _plot(run, res)
    doc = {"rows": res["rows"], "factors": res["factors"], "plan": res["plan"],
           **({"capacity": res["capacity"]} if res["capacity"] else {}),
           "headline": res["headline"]}
    return write_files(run, render(res, run, plot), doc, [plot])
