"""Experiment 5's "Where the gap comes from" (issue 26), from the result folder: each declared
pair of builds (the run's manifest carries the pairs and paths its profile measured) analysed
by experiments/analysis/factors.py, each build's 1-user overhead over the model floor, and a
waterfall of capacity ratios along each declared path. A run without pairs has no such
section: every earlier run's report stays as it was."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.ticker import FormatStrFormatter, NullFormatter

from experiments.analysis.factors import (
    MIN_INTERVAL_REPEATS,
    PairError,
    analyse_pair,
    build_of,
    check_pair,
    overhead,
    waterfall,
)
from experiments.analysis.summary import analyse_run_dir, resource_usage
from experiments.constants import LOAD_TEST
from experiments.plots import plt
from experiments.reporting import fmt
from services.settings import SettingsError


def _stack(arch: str) -> tuple[str, ...]:
    return (f"scoring-{arch}", f"model-{arch}", "redis")


def variant_build(v: dict, arch: str):
    """A recorded rung's build, read as the config check read it (its envs and the workers
    per core it asked for)."""
    return build_of(f"{v['name']}/{arch}", arch,
                    {"model_api": v.get("model_api_env") or {},
                     "scoring_handler": v.get("scoring_handler_env") or {}},
                    {"model_api": v.get("model_api_workers_per_core"),
                     "scoring_handler": v.get("scoring_handler_workers_per_core")})


def load_cpu_by_repeat(run: Path, res: dict, sources: dict) -> dict[tuple[str, str, int], float]:
    """The whole stack's CPU ms per request over each repeat's step load, per (variant, arch,
    repeat): what pairs the CPU difference per repeat (the rows carry repeat 1's only)."""
    if not sources:  # no resource samples: no CPU figures
        return {}
    analysis = res["analysis"]
    out = {}
    for e in res["manifest"].get("scenarios") or []:
        # the step is "load_test-<arrival>" (one per arrival a rung runs): spread's, as rows
        if not (e.get("step") or "").startswith(LOAD_TEST) or (
                e.get("arrival") or "spread") != "spread":
            continue
        d = run / e["locust"]["dir"]
        if not (d / "scenario.json").exists():
            continue
        n = analyse_run_dir(d, warmup_s=analysis.warmup_s,
                            lag_s=analysis.breaking_point.lag_s).numbers
        if not (n.started_at and n.ended_at and n.total_requests):
            continue
        use = {k.rsplit("/", 1)[-1]: u for k, u in
               resource_usage(sources, n.started_at, n.ended_at).items()}
        parts = [use.get(s, {}).get("cpu_total_s") for s in _stack(e["arch"])]
        if all(x is not None for x in parts):
            out[(e["variant"], e["arch"], e.get("repeat", 1))] = (
                sum(parts) * 1000 / n.total_requests)
    return out


def _side(name: str, res: dict, cpu: dict) -> dict[str, Any]:
    variant, arch = name.rsplit("/", 1)
    per = res.get("capacity_by_repeat") or []
    searches = [((c.get(variant) or {}).get(arch) or {}).get("shared") or {} for c in per]
    return {"build": name,
            "capacity": [s.get("capacity") for s in searches],
            "statuses": [s.get("status") for s in searches],
            "cpu_ms": [cpu.get((variant, arch, k)) for k in range(1, len(per) + 1)]}


def _refused(pair: dict, variants: dict) -> str | None:
    """Why a recorded pair is not one factor, from the recorded rungs' settings (None: it
    is)."""
    try:
        builds = []
        for name in (pair["a"], pair["b"]):
            variant, arch = name.rsplit("/", 1)
            if variant not in variants:
                return f"{name} was not measured in this run"
            builds.append(variant_build(variants[variant], arch))
        check_pair(pair["factor"], *builds)
    except (PairError, SettingsError) as exc:  # an env this code's services would refuse
        return str(exc)
    return None


def analyse_factors(run: Path, res: dict, sources: dict) -> dict[str, Any] | None:
    """The split of the run's gaps: None where the run declared no pairs."""
    ladder = res["manifest"].get("ladder") or {}
    if not ladder.get("pairs"):
        return None
    cpu = load_cpu_by_repeat(run, res, sources)
    pairs = []
    for p in ladder["pairs"]:
        pair = analyse_pair(p["factor"], _side(p["a"], res, cpu), _side(p["b"], res, cpu))
        why = _refused(p, res["variants"])
        if why:  # checked at load; a folder edited since, or older code, still cannot slip by
            pair.update(decided=False, undecided=f"refused: {why}", ratio=None, ratios=[],
                        cpu_ms_diff=None)
        pairs.append(pair)
    overheads = []
    for r in res["rows"]:
        v = res["variants"].get(r["variant"])
        if v is None:
            continue
        try:
            build = variant_build(v, r["arch"])
        except SettingsError:  # settings this code no longer reads: no floor to say
            continue
        p50 = r.get("p50_1_user_ms")
        overheads.append(overhead(build, None if p50 is None or math.isnan(p50) else p50))
    return {"pairs": pairs, "overheads": overheads,
            "paths": [{"builds": list(p), "steps": waterfall(p, pairs)}
                      for p in ladder.get("paths") or []]}


def headline(fa: dict) -> dict[str, Any]:
    """Per pair "factor: a -> b": its median capacity ratio, or the reason it has none."""
    return {f"{p['factor']}: {p['a']['build']} -> {p['b']['build']}":
            round(p["ratio"]["median"], 2) if p["decided"] else p["undecided"]
            for p in fa["pairs"]}


# ------------------------------------------------------------------------------ markdown


def _cap(side: dict) -> str:
    """A side's capacities per repeat, each with its status where it did not close."""
    out = []
    for cap, status in zip(side["capacity"], side["statuses"], strict=True):
        text = fmt(cap)
        if cap is None:
            text = f"no capacity ({status or 'no search'})"
        elif status != "found":
            text = (f">= {text}" if status in ("above_range", "unfinished") and cap is not None
                    else text) + f" ({status or 'no search'})"
        out.append(text)
    return ", ".join(out) or "-"


def _spread(s: dict | None, digits: int = 2, unit: str = "") -> str:
    if not s:
        return "-"
    if s["n"] == 1:
        return f"{s['median']:.{digits}f}{unit} (one repeat)"
    return (f"{s['median']:.{digits}f}{unit} (range {s['low']:.{digits}f} to "
            f"{s['high']:.{digits}f}, {s['n']} repeats)")


def _cpu(side: dict) -> str:
    vals = [x for x in side.get("cpu_ms") or [] if x is not None]
    return ", ".join(f"{x:.2f}" for x in vals) or "-"


def factor_lines(fa: dict | None, plot: str | None = None) -> list[str]:
    if not fa:
        return []
    lines = ["## Where the gap comes from", "",
             "Pairs of builds measured in this run that differ in one factor (the run checked "
             "each against the settings its services read: experiments/analysis/factors.py). "
             "Capacity per repeat, status in brackets where a search did not close; b/a is "
             "the capacity ratio paired within each repeat (the same run conditions), its "
             "median and min-max range over the repeats: a range, not a confidence interval "
             f"(none is stated under {MIN_INTERVAL_REPEATS} repeats). A pair where either "
             "side's capacity is a bound attributes nothing. CPU: the whole stack's ms per "
             "request over each repeat's step load, b - a paired per repeat.", "",
             "| factor | build a | build b | capacity a req/s | capacity b req/s | b/a | stack "
             "CPU ms/req a | b | b - a | repeats |", "|---" * 10 + "|"]
    for p in fa["pairs"]:
        a, b = p["a"], p["b"]
        ratio = _spread(p["ratio"], 2, "x") if p["decided"] else p["undecided"]
        lines.append(f"| {p['factor']} | {a['build']} | {b['build']} | {_cap(a)} | {_cap(b)} "
                     f"| {ratio} | {_cpu(a)} | {_cpu(b)} | {_spread(p['cpu_ms_diff'], 2)} | "
                     f"{p['repeats']} |")
    lines += ["", "### 1-user overhead per build", "",
              "The probe's p50 (1 user, repeat 1) over the model floor: the median of the "
              "model's sleep over one request (sequential calls: the median of their sum; "
              "concurrent calls: of their maximum), from each build's settings.", "",
              "| build | model floor ms | 1-user p50 ms | overhead ms |", "|---" * 4 + "|"]
    for o in fa["overheads"]:
        lines.append(f"| {o['build']} | {o['floor_ms']:.2f} | {fmt(o['p50_1_user_ms'], 2)} | "
                     f"{fmt(o['overhead_ms'], 2)} |")
    if fa["paths"]:
        lines += ["", "### From the seed's builds to the best", ""]
        for path in fa["paths"]:
            steps = []
            for s in path["steps"]:
                steps.append(f"{s['factor']} {s['ratio']:.2f}x" if s["ratio"] is not None
                             else f"{s['factor']} undecided")
            total = path["steps"][-1]["cumulative"] if path["steps"] else None
            lines.append(f"- {' -> '.join(path['builds'])}: {', '.join(steps)}"
                         + (f"; in all {total:.2f}x" if total is not None else
                            "; no total: a step is undecided") + ".")
        if plot:
            lines += ["", f"![capacity ratios factor by factor]({plot})"]
    return [*lines, ""]


# ---------------------------------------------------------------------------------- plot


def plot_waterfall(run: Path, fa: dict | None) -> str | None:
    """One panel per path: each step's capacity ratio as a bar from the running product
    before it to the one after it (log scale: ratios multiply), undecided steps hatched
    and flat."""
    paths = [p for p in (fa or {}).get("paths") or [] if p["steps"]]
    if not paths:
        return None
    fig, axes = plt.subplots(1, len(paths), figsize=(5.5 * len(paths), 4.2), squeeze=False)
    for ax, path in zip(axes[0], paths, strict=True):
        level = 1.0
        labels = []
        for i, s in enumerate(path["steps"]):
            labels.append(f"{s['factor']}\n{s['to'].rsplit('/', 1)[0]}")
            if s["ratio"] is None:
                ax.bar(i, 0.02 * level, bottom=level, color="0.8", hatch="//",
                       edgecolor="0.5")
                ax.annotate("undecided", (i, level), ha="center", va="bottom", fontsize=7)
                continue
            new = level * s["ratio"]
            ax.bar(i, new - level, bottom=level,
                   color="tab:green" if s["ratio"] >= 1 else "tab:red")
            ax.annotate(f"{s['ratio']:.2f}x", (i, max(level, new)), ha="center",
                        va="bottom", fontsize=7)
            level = new
        ax.axhline(1.0, color="0.3", lw=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.2fx"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylabel(f"capacity over {path['builds'][0]}")
        ax.set_title(f"{path['builds'][0]} -> {path['builds'][-1]}", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(run / "plot_factors.png", dpi=90)
    plt.close(fig)
    return "plot_factors.png"
