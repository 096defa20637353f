"""Report of experiment 2 (timeit), from the result folder alone (manifest.json,
raw/timeit/timings.csv, raw/resources/): per N and architecture the mean time of N sequential
calls with its confidence interval and pyperf's stability warning, the improvement of async over
sync per N and overall with a significance test, the plot, CPU per call. Rebuildable:

    python -m experiments report results/<run folder>

Improvement (the original's +29 %): (mean sync time - mean async time) / mean sync time.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from experiments.analysis.stats import compare, mean_ci, stability_warning
from experiments.analysis.summary import load_resource_samples, resource_usage
from experiments.constants import DEFAULT_BUILDS
from experiments.plots import plt
from experiments.reporting import (
    Report,
    fmt,
    footer_lines,
    hardware_section,
    header_lines,
    write_files,
)


def read_timings(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open() as f:
        return [{"repeat": int(r["repeat"]), "n": int(r["n"]), "arch": r["arch"],
                 "order": int(r["order"]), "started_at_unix": float(r["started_at_unix"]),
                 "seconds": float(r["seconds"]), "calls_ok": int(r["calls_ok"]),
                 "calls_failed": int(r["calls_failed"])} for r in csv.DictReader(f)]


def improvement_pct(sync_s: float, async_s: float) -> float | None:
    """How much less time async takes than sync, in percent of the sync time."""
    if not sync_s or math.isnan(sync_s) or math.isnan(async_s):
        return None
    return (sync_s - async_s) / sync_s * 100.0


def repeat_totals(rows: list[dict], arch: str) -> list[float]:
    """Per repeat, the time of all N of that repeat summed (one sample of the whole range);
    repeats missing an N are left out."""
    ns = sorted({r["n"] for r in rows})
    by_repeat: dict[int, dict[int, float]] = {}
    for r in rows:
        if r["arch"] == arch:
            by_repeat.setdefault(r["repeat"], {})[r["n"]] = r["seconds"]
    return [sum(v.values()) for v in by_repeat.values() if set(v) == set(ns)]


def summarise(rows: list[dict], *, confidence: float = 0.95, alpha: float = 0.05,
              min_effect: float = 0.02, stability_limit: float = 0.10,
              archs: tuple[str, str] = ("sync", "async")) -> dict[str, Any]:
    """Points per (N, arch), comparisons per N and overall. Failed samples are left out."""
    a_lab, b_lab = archs
    ok = [r for r in rows if r["calls_failed"] == 0]
    points: dict[int, dict[str, Any]] = {}
    for n in sorted({r["n"] for r in ok}):
        per: dict[str, Any] = {}
        for arch in archs:
            ms = [r["seconds"] * 1000 for r in ok if r["n"] == n and r["arch"] == arch]
            ci = mean_ci(ms, confidence)
            per[arch] = {**ci.to_dict(), "warning": stability_warning(ms, stability_limit)
                         if len(ms) > 1 else ci.warning, "per_call_ms": ci.mean / n}
        a_ms = [r["seconds"] * 1000 for r in ok if r["n"] == n and r["arch"] == a_lab]
        b_ms = [r["seconds"] * 1000 for r in ok if r["n"] == n and r["arch"] == b_lab]
        cmp_ = compare(a_ms, b_ms, test="welch", alpha=alpha, min_effect=min_effect,
                       label_a=a_lab, label_b=b_lab)
        per["comparison"] = cmp_.to_dict()
        per["improvement_pct"] = improvement_pct(per[a_lab]["mean"], per[b_lab]["mean"])
        per["conclusive"] = cmp_.significant and not (per[a_lab]["warning"]
                                                       or per[b_lab]["warning"])
        points[n] = per
    ta, tb = repeat_totals(ok, a_lab), repeat_totals(ok, b_lab)
    overall_cmp = compare([x * 1000 for x in ta], [x * 1000 for x in tb], test="welch",
                          alpha=alpha, min_effect=min_effect, label_a=a_lab, label_b=b_lab)
    sum_a = sum(p[a_lab]["mean"] for p in points.values())
    sum_b = sum(p[b_lab]["mean"] for p in points.values())
    warnings = [f"N={n} {arch}: {p[arch]['warning']}" for n, p in points.items()
                for arch in archs if p[arch]["warning"]]
    overall = {
        "sum_of_means_ms": {a_lab: sum_a, b_lab: sum_b},
        "improvement_pct": improvement_pct(sum_a, sum_b),
        "mean_of_improvements_pct": (float(np.mean([p["improvement_pct"] for p in
                                                    points.values()
                                                    if p["improvement_pct"] is not None]))
                                     if points else None),
        "repeat_totals_ci": {a_lab: mean_ci([x * 1000 for x in ta], confidence).to_dict(),
                             b_lab: mean_ci([x * 1000 for x in tb], confidence).to_dict()},
        "comparison": overall_cmp.to_dict(),
        "warnings": warnings,
        "conclusive": overall_cmp.significant and not warnings,
        "failed_samples": len(rows) - len(ok),
    }
    return {"points": points, "overall": overall, "archs": list(archs)}


def analyse(folder: str | Path) -> dict[str, Any]:
    run = Path(folder)
    manifest = json.loads((run / "manifest.json").read_text())
    proto = manifest.get("protocol") or {}
    tinfo = manifest.get("timeit") or {}
    rows = read_timings(run / (tinfo.get("csv") or "raw/timeit/timings.csv"))
    archs = tuple((proto.get("paths") or {"sync": 0, "async": 0}).keys())[:2]
    res = summarise(rows, confidence=proto.get("confidence", 0.95),
                    alpha=proto.get("alpha", 0.05), min_effect=proto.get("min_effect", 0.02),
                    stability_limit=proto.get("stability_limit", 0.10), archs=archs)
    res["manifest"], res["rows"] = manifest, rows
    cpu: dict[str, Any] = {}
    sources = load_resource_samples(run / "raw" / "resources")
    window = tinfo.get("window")
    calls = tinfo.get("calls") or {}
    if sources and window:
        for name, u in resource_usage(sources, window[0], window[1]).items():
            svc = name.rsplit("/", 1)[-1]
            arch = svc.rsplit("-", 1)[-1]
            if arch in calls and calls[arch]:
                cpu[svc] = {"cpu_s": u["cpu_total_s"],
                            "cpu_ms_per_call": u["cpu_total_s"] / calls[arch] * 1000}
            elif svc in ("redis", "loadgen"):
                cpu[svc] = {"cpu_s": u["cpu_total_s"], "cpu_ms_per_call":
                            u["cpu_total_s"] / max(1, sum(calls.values())) * 1000}
    res["cpu"] = cpu
    res["headline"] = _headline(res)
    return res


def _headline(res: dict) -> dict[str, Any]:
    o = res["overall"]
    a, b = res["archs"]
    imp = o["improvement_pct"]
    return {
        "builds": DEFAULT_BUILDS,
        "improvement_pct": round(imp, 1) if imp is not None else None,
        "verdict": o["comparison"]["verdict"],
        "conclusive": o["conclusive"],
        "per_call_ms": {arch: round(np.mean([p[arch]["per_call_ms"]
                                             for p in res["points"].values()]), 1)
                        for arch in (a, b)} if res["points"] else {},
    }


def headline(res: dict) -> dict[str, Any]:
    """The improvement over the whole range, its verdict, and the time per call."""
    return res["headline"]


def _plot(run: Path, res: dict) -> str | None:
    points = res["points"]
    if not points:
        return None
    ns = np.array(sorted(points))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True,
                                   gridspec_kw={"height_ratios": [2, 1]})
    for arch in res["archs"]:
        mean = np.array([points[n][arch]["mean"] for n in ns])
        low = np.array([points[n][arch]["low"] for n in ns], dtype=float)
        high = np.array([points[n][arch]["high"] for n in ns], dtype=float)
        (line,) = ax1.plot(ns, mean, "o-", label=f"{arch} mean")
        ax1.fill_between(ns, low, high, alpha=0.25, color=line.get_color(),
                         label=f"{arch} 95 % CI")
        for r in res["rows"]:
            if r["arch"] == arch and r["calls_failed"] == 0:
                ax1.plot(r["n"], r["seconds"] * 1000, ".", color=line.get_color(), alpha=0.25,
                         ms=3)
    ax1.set_ylabel("time of N sequential calls (ms)")
    ax1.set_title("timeit: N sequential scoring calls (dots: every sample)")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    imp = [points[n]["improvement_pct"] or 0 for n in ns]
    colors = ["tab:green" if points[n]["conclusive"] else "tab:gray" for n in ns]
    ax2.bar(ns, imp, color=colors, width=0.6)
    ax2.axhline(0, color="black", lw=0.8)
    ax2.set_ylabel("async improvement (%)")
    ax2.set_xlabel("N (sequential calls)")
    ax2.set_title("green: significant and stable; gray: cannot conclude", fontsize=9)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run / "plot_timeit.png", dpi=90)
    plt.close(fig)
    return "plot_timeit.png"


def render(res: dict, run: Path, plot: str | None) -> str:
    m = res["manifest"]
    proto = m.get("protocol") or {}
    a, b = res["archs"]
    o = res["overall"]
    lines = header_lines(m, run)
    lines += [
        f"- Protocol: N in {proto.get('ns')}, {proto.get('repeats')} repeats, "
        f"{proto.get('warmup_calls')} warm-up calls, one keep-alive connection per "
        "architecture from the load generator's cores; the architecture timed first "
        "alternates, so machine noise hits both.",
        "",
    ]
    imp = o["improvement_pct"]
    verdict = o["comparison"]["verdict"]
    if o["conclusive"]:
        concl = (f"async takes {fmt(imp)} % less time than sync over the whole range "
                 f"({verdict}).")
    elif o["comparison"]["significant"]:
        concl = (f"async takes {fmt(imp)} % less time than sync over the whole range "
                 f"({verdict}), but the spread is too large to conclude: "
                 + "; ".join(o["warnings"]) + ".")
    else:
        concl = f"improvement {fmt(imp)} %, {verdict}: the data do not separate the two."
    lines += ["## Result", "",
              f"Overall (sum over N of the mean times; the original reported +29 %): {concl}",
              f"Mean of the per-N improvements: {fmt(o['mean_of_improvements_pct'])} %. "
              f"Significance: Welch's t on the per-repeat totals ({a} vs {b}), alpha "
              f"{proto.get('alpha', 0.05)}; a point is conclusive only when significant and "
              f"both samples have std dev < {proto.get('stability_limit', 0.1):.0%} of their "
              "mean (pyperf's rule).", "",
              f"| N | {a} mean ms | {a} 95 % CI | {b} mean ms | {b} 95 % CI | "
              f"{a} ms/call | {b} ms/call | improvement % | test | conclusive |",
              "|---" * 10 + "|"]
    for n, p in res["points"].items():
        lines.append(
            f"| {n} | {fmt(p[a]['mean'])} | {fmt(p[a]['low'])}-{fmt(p[a]['high'])} | "
            f"{fmt(p[b]['mean'])} | {fmt(p[b]['low'])}-{fmt(p[b]['high'])} | "
            f"{fmt(p[a]['per_call_ms'])} | {fmt(p[b]['per_call_ms'])} | "
            f"{fmt(p['improvement_pct'])} | {p['comparison']['verdict']} | "
            f"{'yes' if p['conclusive'] else '**no**'} |")
    lines.append("")
    for w in o["warnings"]:
        lines.append(f"- **Spread too large to conclude**: {w}")
    if o["failed_samples"]:
        lines.append(f"- **{o['failed_samples']} samples had failed calls and are left out.**")
    if plot:
        lines += ["", f"![timeit]({plot})", ""]
    if res["cpu"]:
        lines += ["## CPU per call", "",
                  "Over the whole timed window; a service's CPU divided by the calls its "
                  "architecture served (Redis and the load generator: by all calls).", "",
                  "| service | CPU s | CPU ms/call |", "|---|---|---|"]
        for svc, u in sorted(res["cpu"].items()):
            lines.append(f"| {svc} | {fmt(u['cpu_s'], 2)} | {fmt(u['cpu_ms_per_call'], 3)} |")
        lines.append("")
    lines += hardware_section(run)
    lines += footer_lines()
    return "\n".join(lines)


def write_report(folder: str | Path, res: dict[str, Any]) -> Report:
    run = Path(folder)
    plot = _plot(run, res)
    doc = {"points": {str(n): p for n, p in res["points"].items()},
           "overall": res["overall"], "cpu": res["cpu"], "headline": res["headline"]}
    return write_files(run, render(res, run, plot), doc, [plot])
