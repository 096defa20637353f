"""Report of experiment 6 (crossover), from the result folder alone. Every point is analysed as
a ladder rung (experiments/analysis/ladder.py: capacity at the shared bound, the ceiling model's
prediction); this arranges them per factor: capacity of each build against the factor's value,
measured and predicted, async's advantage at each value, and where it falls below the threshold.
Rebuildable:

    python -m experiments report results/<run folder>
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from experiments.analysis.ladder import analyse_rungs
from experiments.plots import plt
from experiments.reporting import (
    Report,
    capacity_lines,
    fmt,
    footer_lines,
    hardware_section,
    header_lines,
    number,
    pct,
    write_files,
)

# Capacities whose bracket an advantage's range is computed from: found, or held with a
# budget spent (the capacity lies in [held, first failing)). Not "every rate passed"
# (above_range): that is the protocol's max_rate, not the build's capacity, and two of them
# would read as "no advantage".
USABLE = ("found", "unfinished")
# Capacities an advantage's point value (and the crossing) is computed from: only a search
# that closed. A held floor is the search's, not the stack's: the committed crossing run's
# "+67 % at 4 ms" rested on sync's 40.7 = 57.6 / sqrt(2), a step down from a failed hold.
CLOSED = ("found",)



def advantage(async_rps: float | None, sync_rps: float | None) -> float | None:
    """async's capacity over sync's, minus 1 (0.10: async carries 10 % more); infinite when
    only async meets the bound at all."""
    a, s = number(async_rps), number(sync_rps)
    if a is None or s is None:
        return None
    if s == 0:
        return math.inf if a > 0 else None
    return a / s - 1


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
            # from "only async meets the bound" there is no line to interpolate on
            at = None if math.isinf(a0) else v0 + (a0 - threshold) / (a0 - a1) * (v1 - v0)
            out = {"kind": "crosses", "value": at, "between": [v0, v1], "advantages": [a0, a1]}
            # not every factor is monotonic: say where the advantage comes back, if it does
            back = next(((v, a) for v, a in known if v > v1 and a >= threshold), None)
            if back:
                out["above_again"] = {"value": back[0], "advantage": back[1]}
            return out
    return {"kind": "above", "value": known[-1][0], "advantage": known[-1][1]}


# A stack whose median response time with one user at a time is above the bound meets it
# at no rate: its capacity under the bound is 0 when its search has none (before the
# recovery waits learnt a slow idle stack after a restart, such searches ended invalid;
# now every step fails, down to "below range" or the step budget).
OUT_OF_REACH = "out_of_reach"


def _cap(row: dict | None) -> tuple[float | None, str | None]:
    """(capacity an advantage may use, search status); an above-range capacity is shown as a
    lower bound but never compared; a bound out of reach at one user is a capacity of 0."""
    if not row:
        return None, None
    one_user, bound = number(row.get("p50_1_user_ms")), number(row.get("capacity_p99_bound_ms"))
    measured = row.get("capacity_status") in (*USABLE, "above_range") \
        and number(row.get("capacity_rps")) is not None
    if not measured and one_user is not None and bound is not None and one_user > bound:
        return 0.0, OUT_OF_REACH
    if row.get("capacity_status") not in USABLE:
        return None, row.get("capacity_status")
    return number(row.get("capacity_rps")), row["capacity_status"]


def _closed(cap: float | None, status: str | None) -> float | None:
    """The capacity a point advantage may use: a closed search's, or 0 out of reach."""
    return cap if status in (*CLOSED, OUT_OF_REACH) else None


def _bracket(row: dict | None, cap: float | None) -> tuple[float | None, float | None]:
    """Where the capacity lies: from the rate the search held to the first rate it saw
    overloaded (None: not known, e.g. a search that never failed a step)."""
    if cap is None:
        return None, None
    if cap == 0.0:
        return 0.0, 0.0
    return cap, number((row or {}).get("first_overloaded_rps"))


def advantage_range(a: tuple[float | None, float | None],
                    s: tuple[float | None, float | None]) -> tuple[float | None, float | None]:
    """The advantage's lowest and highest values the two brackets allow (None: unbounded or
    unknown). A capacity is in [held, first overloaded): the search's own uncertainty."""
    (a_lo, a_hi), (s_lo, s_hi) = a, s
    if a_lo is None or s_lo is None:
        return None, None
    if s_lo == 0.0:
        return (math.inf, math.inf) if a_lo > 0 else (None, None)
    lo = a_lo / s_hi - 1 if s_hi else None
    hi = a_hi / s_lo - 1 if a_hi is not None else None
    return lo, hi


def settled(c: dict, series: list[dict], threshold: float) -> bool | None:
    """Whether the searches' brackets agree with the crossing: every advantage it rests on is
    on the same side of the threshold at both ends of its range (None: no crossing)."""
    at = {p["value"]: p["advantage_range"] for p in series}

    def above(v: float) -> bool:
        lo = at[v][0]
        return lo is not None and lo >= threshold

    def below(v: float) -> bool:
        hi = at[v][1]
        return hi is not None and hi < threshold

    if c["kind"] == "crosses":
        return above(c["between"][0]) and below(c["between"][1])
    if c["kind"] == "below":
        return below(c["value"])
    if c["kind"] == "above":
        return all(above(p["value"]) for p in series if p["advantage"] is not None)
    return None


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
                ps = number((sync or {}).get("predicted_rps"))
                pa = number((async_ or {}).get("predicted_rps"))
                series.append({"value": value, "variant": name,
                               "sync_rps": cs, "async_rps": ca,
                               # as the search left it, whatever its status: for the table
                               "sync_capacity_rps": number((sync or {}).get("capacity_rps")),
                               "async_capacity_rps": number((async_ or {}).get("capacity_rps")),
                               "sync_status": ss, "async_status": sa,
                               "sync_1_user_p50_ms": number((sync or {}).get("p50_1_user_ms")),
                               "async_1_user_p50_ms": number(
                                   (async_ or {}).get("p50_1_user_ms")),
                               "sync_predicted_rps": ps, "async_predicted_rps": pa,
                               "advantage": advantage(_closed(ca, sa), _closed(cs, ss)),
                               "advantage_range": advantage_range(_bracket(async_, ca),
                                                                  _bracket(sync, cs)),
                               "predicted_advantage": advantage(pa, ps)})
            measured = crossing([(p["value"], p["advantage"]) for p in series], threshold)
            measured["settled"] = settled(measured, series, threshold)
            per_tier[tier] = {
                "series": series, "crossing": measured,
                "predicted_crossing": crossing(
                    [(p["value"], p["predicted_advantage"]) for p in series], threshold)}
        out[fname] = per_tier
    return out


def analyse(folder: str | Path) -> dict[str, Any]:
    run = Path(folder)
    res = analyse_rungs(run)
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
                                      else round(c["value"], 2),
                                      "settled": c.get("settled")}
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



def _adv(x: float | None) -> str:
    """An advantage as a signed percent ("async only": sync meets the bound at no rate)."""
    return "async only" if x is not None and math.isinf(x) else pct(x, signed=True)


def _range(r: tuple[float | None, float | None] | list) -> str:
    lo, hi = r
    if lo is None and hi is None or (lo is not None and math.isinf(lo)):
        return ""
    return f" ({_adv(lo) if lo is not None else '?'} to {_adv(hi) if hi is not None else '?'})"


def crossing_sentence(c: dict, f: dict, threshold: float) -> str:
    unit = f["unit"]
    unsettled = ("" if c.get("settled") in (True, None) else
                 "; **not settled**: the searches' brackets around it reach both sides of "
                 f"{threshold:.0%} (ranges in the table)")
    if c["kind"] == "crosses":
        v0, v1 = c["between"]
        where = (f"at about **{c['value']:.3g} {unit}** (" if c["value"] is not None
                 else "somewhere (")
        again = c.get("above_again")
        back = (f"; above it again at {again['value']:g} {unit} ({_adv(again['advantage'])})"
                if again else "")
        return (f"falls below {threshold:.0%} {where}between "
                f"{v0:g} {unit}, {_adv(c['advantages'][0])}, and {v1:g} {unit}, "
                f"{_adv(c['advantages'][1])}){back}{unsettled}")
    if c["kind"] == "below":
        return (f"is below {threshold:.0%} already at {c['value']:g} {unit} "
                f"({_adv(c['advantage'])}){unsettled}")
    if c["kind"] == "above":
        return (f"stays above {threshold:.0%} up to {c['value']:g} {unit} "
                f"({_adv(c['advantage'])} there){unsettled}")
    return "cannot be computed (no point with both capacities)"


def _cap_cell(p: dict, arch: str) -> str:
    v, status, raw = p[f"{arch}_rps"], p[f"{arch}_status"], p.get(f"{arch}_capacity_rps")
    if status == OUT_OF_REACH:
        return (f"0 (1 user: p50 {fmt(p[f'{arch}_1_user_p50_ms'], 0)} ms, over the bound; "
                "its search found no idle stack)")
    if v is not None:
        return (">= " + fmt(v) + " (held)") if status == "unfinished" else fmt(v)
    if status == "above_range" and raw is not None:
        return f"≥ {fmt(raw)} (every rate passed)"
    return f"n/a ({status})" if status else "n/a"


def _factor_lines(res: dict) -> list[str]:
    plan, threshold = res["plan"], res["plan"]["threshold"]
    lines = ["## Where async's advantage falls", "",
             "Advantage = async's capacity / sync's capacity - 1, same tier of builds, at the "
             "shared p99 bound; the crossing is interpolated linearly between the two values "
             "around it. The predicted one applies the ceiling model to each point's own "
             "measurements (a throughput ceiling: it knows no latency bound). In brackets, the "
             "advantage's range from each search's own bracket (a capacity lies between the "
             "rate held and the first rate seen overloaded; \">= x (held)\": a search whose "
             "budget ran out before its bracket closed, a lower bound that gives the range "
             "but no point advantage, and no crossing rests on it); a crossing whose ranges "
             "reach both sides of the threshold is marked not settled.", ""]
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
                             f"{_adv(p['advantage'])}{_range(p['advantage_range'])} | "
                             f"{fmt(p['sync_predicted_rps'])} | "
                             f"{fmt(p['async_predicted_rps'])} | "
                             f"{_adv(p['predicted_advantage'])} |")
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
    lines += capacity_lines(res)
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
