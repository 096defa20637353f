"""Report of experiment 5 (best builds), from the result folder alone. Each point is measured
as an experiment 4 rung (its analysis: capacity at the shared bound, step load, CPU per request
per service, the ceiling model), and this adds what a sweep asks: peak memory, throughput and
CPU per request against concurrency along the step load's ramp (so a collapse past the knee
shows, with where its CPU goes), and each architecture's best build. Rebuildable:

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
import numpy as np  # noqa: E402

from experiments.analysis.summary import (  # noqa: E402
    analyse_run_dir,
    load_resource_samples,
    resource_usage,
)
from experiments.exp4_ladder import report as ladder  # noqa: E402
from experiments.reporting import (  # noqa: E402
    Report,
    fmt,
    footer_lines,
    hardware_section,
    header_lines,
    write_files,
)

# A capacity the search could stand behind: found, or held with the step budget spent.
TRUSTED = ("found", "unfinished", "above_range")
# The ramp's top: its last levels, over which "throughput at the highest concurrency" and
# CPU per request there are averaged (one level is a second or two: too few to trust alone).
TOP_LEVELS = 3
LOW_USERS = 20  # CPU per request "at low concurrency": levels of at most this many users


def _stack(arch: str) -> tuple[str, ...]:
    return (f"scoring-{arch}", f"model-{arch}", "redis")


def ramp_curve(d: Path, sources: dict, arch: str, warmup_s: float,
               lag_s: float) -> list[dict[str, float]]:
    """Per user level of a closed-loop ramp: users, throughput (mean completions per second
    at that level, its first second left out when it has more: the level's start is still
    the previous level's answers) and the scoring handler's CPU ms per completed request
    there (None without resource samples)."""
    rd = analyse_run_dir(d, warmup_s=warmup_s, lag_s=lag_s)
    s = rd.series
    out = []
    for u in sorted({int(x) for x in s.users if x > 0}):
        bins = np.flatnonzero(s.users == u)
        if len(bins) > 1:
            bins = bins[1:]
        done = float(s.requests[bins].sum())
        point = {"users": u, "rps": float(np.mean(s.achieved_rps[bins])),
                 "cpu_ms_per_request": None}
        if sources and done:
            start, end = s.t0 + float(s.t[bins[0]]), s.t0 + float(s.t[bins[-1]]) + 1.0
            cpu = cpu_seconds_between(sources, f"scoring-{arch}", start, end)
            if cpu is not None:
                point["cpu_ms_per_request"] = cpu * 1000 / done
        out.append(point)
    return out


def cpu_seconds_between(sources: dict, service: str, start: float, end: float) -> float | None:
    """CPU seconds a service used in [start, end], its cumulative CPU interpolated between
    samples: a level of the ramp lasts a second or two, fewer than the two samples a window
    needs (hardware/summary.py). None when the samples do not cover the window."""
    for samples in sources.values():
        pts = [(x["t"], svc.get("cpu_user_s", 0) + svc.get("cpu_system_s", 0))
               for x in samples if (svc := x.get("services", {}).get(service))]
        if len(pts) < 2:
            continue
        t, c = np.array(pts, dtype=float).T
        if start < t[0] or end > t[-1]:
            return None
        # a restarted process counts from zero again: only increases add up
        cum = np.concatenate([[0.0], np.cumsum(np.clip(np.diff(c), 0, None))])
        return float(np.interp(end, t, cum) - np.interp(start, t, cum))
    return None


def _mean(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def collapse(curve: list[dict[str, float]]) -> dict[str, Any] | None:
    """Peak throughput along the ramp and what is left of it at the top concurrency."""
    if len(curve) < TOP_LEVELS + 1:
        return None
    peak = max(curve, key=lambda p: p["rps"])
    top = curve[-TOP_LEVELS:]
    top_rps = float(np.mean([p["rps"] for p in top]))
    low = [p["cpu_ms_per_request"] for p in curve if p["users"] <= LOW_USERS]
    return {"peak_rps": peak["rps"], "peak_users": peak["users"],
            "top_users": top[-1]["users"], "top_rps": top_rps,
            "drop": 1 - top_rps / peak["rps"] if peak["rps"] > 0 else None,
            "cpu_ms_low": _mean(low),
            "cpu_ms_top": _mean([p["cpu_ms_per_request"] for p in top])}


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def best_builds(rows: list[dict]) -> dict[str, dict]:
    """Per architecture, the point with the highest capacity the search stands behind (the
    step load's max req/s where no search ran); ties go to the cheaper CPU per request."""
    out = {}
    for arch in sorted({r["arch"] for r in rows}):
        def score(r):
            cap = r.get("capacity_rps") if r.get("capacity_status") in TRUSTED else None
            return (_num(cap) or 0.0, -(r.get("stack_cpu_ms_per_request") or math.inf))
        cands = [r for r in rows if r["arch"] == arch]
        best = max(cands, key=score)
        default = next((r for r in cands if r["variant"] == "default"), None)
        entry = {"variant": best["variant"], "capacity_rps": best.get("capacity_rps"),
                 "capacity_status": best.get("capacity_status"),
                 "max_rps": best["max_rps"],
                 "stack_cpu_ms_per_request": best.get("stack_cpu_ms_per_request"),
                 "rss_mb": best.get("rss_mb")}
        if default is not None and default is not best:
            d, b = _num(default.get("capacity_rps")), _num(best.get("capacity_rps"))
            entry["over_default"] = b / d if d and b else None
        out[arch] = entry
    return out


def analyse(folder: str | Path) -> dict[str, Any]:
    """Experiment 4's analysis of every point, plus per row: the sweep, stack CPU ms per
    request, peak RSS, the ramp's curve and collapse; and the best build per architecture."""
    run = Path(folder)
    res = ladder.analyse(run)
    analysis = res["analysis"]
    sources = load_resource_samples(run / "raw" / "resources")
    rows = [r for r in res["rows"] if r["arrival"] == "spread"]
    for r in rows:
        v = res["variants"].get(r["variant"], {})
        load = res["loads"][(r["variant"], r["arch"], r["arrival"])]
        cpu = r["cpu_ms_per_request"]
        parts = [cpu.get(s) for s in _stack(r["arch"])]
        r["sweep"] = v.get("sweep", "")
        r["stack_cpu_ms_per_request"] = sum(parts) if all(p is not None for p in parts) else None
        start, end = load["window"]
        usage = resource_usage(sources, start, end) if sources and start and end else {}
        rss = [usage[s]["rss_peak_bytes"] for s in _stack(r["arch"])[:2] if s in usage]
        r["rss_mb"] = sum(rss) / 2**20 if len(rss) == 2 else None
        r["curve"] = ramp_curve(run / load["dir"], sources, r["arch"], analysis.warmup_s,
                                analysis.breaking_point.lag_s)
        r["collapse"] = collapse(r["curve"])
    res["rows"] = rows
    res["best"] = best_builds(rows)
    res["headline"] = _headline(res)
    return res


def _headline(res: dict) -> dict[str, Any]:
    def r1(x):
        return None if _num(x) is None else round(x, 1)
    return {"best": {arch: {"variant": b["variant"], "capacity_rps": r1(b["capacity_rps"]),
                            "stack_cpu_ms_per_request": (
                                None if b["stack_cpu_ms_per_request"] is None
                                else round(b["stack_cpu_ms_per_request"], 2)),
                            "rss_mb": r1(b["rss_mb"])}
                     for arch, b in res["best"].items()},
            "capacity_rps": {f"{r['variant']}/{r['arch']}": r1(r.get("capacity_rps"))
                             for r in res["rows"] if "capacity_rps" in r}}


def headline(res: dict) -> dict[str, Any]:
    """Each architecture's best build (capacity, CPU per request, RSS), every point's capacity."""
    return res["headline"]


# ---------------------------------------------------------------------------------- plot


def _plot(run: Path, rows: list[dict]) -> str | None:
    archs = [a for a in ("sync", "async") if any(r["arch"] == a and r["curve"] for r in rows)]
    if not archs:
        return None
    fig, axes = plt.subplots(2, len(archs), figsize=(6.5 * len(archs), 7.5), squeeze=False)
    for j, arch in enumerate(archs):
        top, bottom = axes[0][j], axes[1][j]
        for r in (r for r in rows if r["arch"] == arch and r["curve"]):
            users = [p["users"] for p in r["curve"]]
            line, = top.plot(users, [p["rps"] for p in r["curve"]], label=r["variant"],
                             lw=1.2)
            if _num(r.get("capacity_rps")):
                top.axhline(r["capacity_rps"], color=line.get_color(), ls=":", lw=0.8)
            bottom.plot(users, [p["cpu_ms_per_request"] or np.nan for p in r["curve"]],
                        color=line.get_color(), lw=1.0)
        top.set_title(f"{arch}: throughput against concurrency (dotted: capacity at the bound)",
                      fontsize=9)
        top.set_ylabel("completed req/s")
        bottom.set_ylabel(f"scoring-{arch} CPU ms / request")
        bottom.set_xlabel("users (closed loop, 1 req/s each: past the knee, requests in flight)")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
        top.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run / "plot_builds.png", dpi=90)
    plt.close(fig)
    return "plot_builds.png"


# ------------------------------------------------------------------------------ markdown


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def _best_lines(res: dict) -> list[str]:
    lines = ["## Best builds", "",
             "Per architecture, the point with the highest capacity at the shared bound (held "
             "or found by the search), on the same CPU budget; its cost is the whole stack's "
             "CPU per request (scoring handler + model API + Redis, over the step load) and the "
             "peak memory of its two services.", ""]
    for arch, b in res["best"].items():
        s = (f"- **{arch}: `{b['variant']}`**, capacity {fmt(b['capacity_rps'])} req/s "
             f"({b['capacity_status'] or 'no search'}), step-load max {fmt(b['max_rps'])} "
             f"req/s, {fmt(b['stack_cpu_ms_per_request'], 2)} ms CPU per request, "
             f"{fmt(b['rss_mb'], 0)} MB RSS")
        if b.get("over_default"):
            s += f"; {b['over_default']:.2f}x the default build's capacity"
        lines.append(s + ".")
    if len(res["best"]) == 2:
        a, s = (_num(res["best"][k]["capacity_rps"]) for k in ("async", "sync"))
        if a and s:
            lines.append(f"- Best against best: async/sync = **{a / s:.2f}x** at the shared "
                         "bound.")
    return [*lines, ""]


def _sweep_lines(res: dict) -> list[str]:
    lines = ["## The sweeps", "",
             "One row per point; `default` is the lab's build, shared by every sweep. Capacity: "
             "the highest open-model rate whose p99 response time meets the bound (status in "
             "brackets where the search did not close its bracket). Along the ramp: peak "
             "throughput and what is left at the highest concurrency (the mean of its last "
             f"{TOP_LEVELS} levels), and the scoring handler's CPU per request at <= "
             f"{LOW_USERS} users and there.", "",
             "| arch | sweep | point | capacity req/s | predicted req/s | ramp peak req/s (users)"
             " | at top users | drop | scoring CPU ms/req low -> top | stack CPU ms/req | RSS MB "
             "| workers |", "|---" * 12 + "|"]
    for r in sorted(res["rows"], key=lambda r: (r["arch"] != "sync", r["sweep"], r["variant"])):
        c = r["collapse"] or {}
        cap = fmt(r.get("capacity_rps"))
        if r.get("capacity_status") and r["capacity_status"] != "found":
            cap += f" ({r['capacity_status']})"
        workers = ", ".join(
            f"{k} {w.get('workers')}" + (f"x{w['threads']}" if w.get("threads") else "")
            + (f" {w['worker_class']}" if w.get("worker_class") else "")
            for k, w in r["workers"].items())
        lines.append(
            f"| {r['arch']} | {r['sweep'] or '(default)'} | {r['variant']} | {cap} | "
            f"{fmt(r['predicted_rps'])} | {fmt(c.get('peak_rps'))} ({c.get('peak_users', '-')})"
            f" | {fmt(c.get('top_rps'))} ({c.get('top_users', '-')}) | {_pct(c.get('drop'))} | "
            f"{fmt(c.get('cpu_ms_low'), 2)} -> {fmt(c.get('cpu_ms_top'), 2)} | "
            f"{fmt(r['stack_cpu_ms_per_request'], 2)} | {fmt(r['rss_mb'], 0)} | {workers} |"
            + ("" if r["valid"] else " **invalid**"))
    falls = [r for r in res["rows"] if (r["collapse"] or {}).get("drop") is not None
             and r["collapse"]["drop"] > 0.15]
    if falls:
        lines += ["", "Throughput that falls past the knee (more than 15 % below its peak at the "
                  "highest concurrency):", ""]
        for r in falls:
            c = r["collapse"]
            why = ""
            if c["cpu_ms_low"] and c["cpu_ms_top"]:
                why = (f"; the scoring handler's CPU per request grows from "
                       f"{fmt(c['cpu_ms_low'], 2)} to {fmt(c['cpu_ms_top'], 2)} ms "
                       f"({c['cpu_ms_top'] / c['cpu_ms_low']:.1f}x): the same core does more work "
                       "per answer as concurrency grows")
            lines.append(f"- {r['variant']}/{r['arch']}: {fmt(c['peak_rps'])} req/s at "
                         f"{c['peak_users']} users, {fmt(c['top_rps'])} at {c['top_users']} "
                         f"({_pct(c['drop'])} less){why}.")
    return [*lines, ""]


def render(res: dict, run: Path, plot: str | None) -> str:
    lines = header_lines(res["manifest"], run)
    lines += ["## The points", "",
              "Each point is the default build with the settings it names, deployed, verified, "
              "probed at 1 user, given the step load and searched for its capacity; the default "
              "build was redeployed at the end.", "",
              "| point | sweep | what changes | deploy vars |", "|---|---|---|---|"]
    for v in res["variants"].values():
        lines.append(f"| {v['name']} | {v.get('sweep') or '(default)'} | "
                     f"{v.get('description', '')} | `{json.dumps(v.get('deploy_vars') or {})}` |")
    failed = [v for v in res["variants"].values() if v.get("failed")]
    if failed:
        lines += ["", "Points that could not be measured (the deploy log under raw/deploy/ and "
                  "the service logs say why):", ""]
        lines += [f"- **{v['name']}**: {v['failed']}" for v in failed]
    lines += ["", *_best_lines(res), *_sweep_lines(res)]
    if plot:
        lines += [f"![throughput and CPU against concurrency]({plot})", ""]
    lines += ladder.capacity_lines(res)
    lines += ["## The ceiling model per point", ""]
    lines += [f"- {r['variant']}/{r['arch']}: {r['model_sentence']}" for r in res["rows"]]
    lines += ["", *hardware_section(run), *footer_lines()]
    return "\n".join(lines)


def write_report(folder: str | Path, res: dict[str, Any]) -> Report:
    run = Path(folder)
    plot = _plot(run, res["rows"])
    doc = {"rows": res["rows"], "best": res["best"],
           **({"capacity": res["capacity"]} if res["capacity"] else {}),
           "headline": res["headline"]}
    return write_files(run, render(res, run, plot), doc, [plot])
