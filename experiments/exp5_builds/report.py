"""Report of experiment 5 (best builds), from the result folder alone. Each point is analysed as
a ladder rung (experiments/analysis/ladder.py: capacity at the shared bound, step load, CPU per
request per service, the ceiling model), and this adds what a sweep asks: peak memory,
throughput and CPU per request against concurrency along the step load's ramp (so a collapse
past the knee shows, with where its CPU goes), and each architecture's best build. Rebuildable:

    python -m experiments report results/<run folder>
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from experiments.analysis.ceiling import workers_label
from experiments.analysis.ladder import analyse_rungs
from experiments.analysis.summary import (
    analyse_run_dir,
    load_resource_samples,
    resource_usage,
)
from experiments.exp5_builds import factors_report
from experiments.lab.renew import RESTART_VAR
from experiments.plots import plt
from experiments.reporting import (
    Report,
    capacity_lines,
    fmt,
    footer_lines,
    hardware_section,
    header_lines,
    headline_capacity,
    number,
    pct,
    write_files,
)
from hardware.summary import cpu_seconds_between

# A capacity a best build may be chosen by: a search that closed. A held floor (unfinished)
# or every rate passing (above_range) is a lower bound: such a point is shown as one, never
# named best on it.
TRUSTED = ("found",)
# The ramp's top: its last levels, over which "throughput at the highest concurrency" and
# CPU per request there are taken (one level is a second or two: too few to trust alone).
TOP_LEVELS = 3
# A process's CPU counter moves in 10 ms ticks, so CPU per request over few requests is
# noise (a level of 1 user, 2 requests, read 0.06 ms where a request costs ~5): a level's own
# figure needs this many requests, and the "low concurrency" window pools the ramp's first
# levels until it has WINDOW_REQUESTS (a tick per process is then under 0.1 ms/request).
LEVEL_REQUESTS = 50
WINDOW_REQUESTS = 200
# CPU per request "grows" (or "falls") past the knee only beyond this ratio: below it, the
# two windows' figures are within what the counters and the mix of a ramp can tell apart.
CPU_CHANGE = 1.15


# The setting experiment 5's Redis-parser points change (services/redis_protocol.py).
PARSER_SETTING = "SCORING_LAB_REDIS_PARSER"


def _stack(arch: str) -> tuple[str, ...]:
    return (f"scoring-{arch}", f"model-{arch}", "redis")


def _cpu_between(sources: dict, service: str, start: float, end: float) -> float | None:
    for samples in sources.values():
        cpu = cpu_seconds_between(samples, service, start, end)
        if cpu is not None:
            return cpu
    return None


def ramp_curve(d: Path, sources: dict, arch: str, warmup_s: float,
               lag_s: float) -> list[dict[str, Any]]:
    """Per user level of a closed-loop ramp: users, throughput (mean successful answers per
    second at that level, its first second left out when it has more: the level's start is
    still the previous level's answers), the requests answered there (errors included: they
    cost CPU too) and the errors among them, the level's seconds, each stack service's CPU
    seconds over them (None without resource samples) and the scoring handler's CPU ms per
    answered request (None below LEVEL_REQUESTS requests)."""
    rd = analyse_run_dir(d, warmup_s=warmup_s, lag_s=lag_s)
    s = rd.series
    out = []
    for u in sorted({int(x) for x in s.users if x > 0}):
        bins = np.flatnonzero(s.users == u)
        if len(bins) > 1:
            bins = bins[1:]
        done = float(s.requests[bins].sum())  # answered: errors cost CPU too
        start, end = s.t0 + float(s.t[bins[0]]), s.t0 + float(s.t[bins[-1]]) + 1.0
        cpu = {svc: _cpu_between(sources, svc, start, end) for svc in _stack(arch)}
        scoring = cpu[f"scoring-{arch}"]
        out.append({"users": u, "rps": float(np.mean(s.achieved_rps[bins])), "requests": done,
                    "errors": float(s.failures[bins].sum()), "seconds": end - start,
                    "cpu_s": cpu,
                    "cpu_ms_per_request": (scoring * 1000 / done if scoring is not None
                                           and done >= LEVEL_REQUESTS else None)})
    return out


def _window_cpu(levels: list[dict]) -> dict[str, Any] | None:
    """Pooled over levels: the users they span, their requests, and CPU ms per request per
    stack service and for the stack (None when a level lacks a service's samples)."""
    done = sum(p["requests"] for p in levels)
    if not levels or not done:
        return None
    per, busy = {}, 0.0
    for svc in levels[0]["cpu_s"]:
        parts = [p["cpu_s"].get(svc) for p in levels]
        per[svc] = None if None in parts else sum(parts) * 1000 / done
        busy = None if busy is None or None in parts else busy + sum(parts)
    seconds = sum(p["seconds"] for p in levels)
    return {"users": (levels[0]["users"], levels[-1]["users"]), "requests": done,
            "error_fraction": sum(p["errors"] for p in levels) / done,
            "ms_per_request": per,
            "stack_ms_per_request": (None if None in per.values() or not per
                                     else sum(per.values())),
            # cores' worth of CPU the stack used there (1.0: one core fully busy)
            "stack_cores": busy / seconds if busy is not None and seconds else None}


def collapse(curve: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Peak throughput along the ramp, what is left of it at the top concurrency, and the CPU
    per request at low concurrency (the first levels up to WINDOW_REQUESTS requests) and at
    the top (the last TOP_LEVELS levels), pooled: None where the windows would overlap."""
    if len(curve) < TOP_LEVELS + 1:
        return None
    peak = max(curve, key=lambda p: p["rps"])
    top = curve[-TOP_LEVELS:]
    top_rps = float(np.mean([p["rps"] for p in top]))
    low: list[dict] = []
    for p in curve[:-TOP_LEVELS]:
        low.append(p)
        if sum(x["requests"] for x in low) >= WINDOW_REQUESTS:
            break
    enough = sum(x["requests"] for x in low) >= WINDOW_REQUESTS
    return {"peak_rps": peak["rps"], "peak_users": peak["users"],
            "top_users": top[-1]["users"], "top_rps": top_rps,
            "drop": 1 - top_rps / peak["rps"] if peak["rps"] > 0 else None,
            "cpu_low": _window_cpu(low) if enough else None, "cpu_top": _window_cpu(top)}



def best_builds(rows: list[dict]) -> dict[str, dict]:
    """Per architecture, the point with the highest capacity the search stands behind (the
    step load's max req/s where no search ran); ties go to the cheaper CPU per request."""
    out = {}
    for arch in sorted({r["arch"] for r in rows}):
        def score(r):
            cap = r.get("capacity_rps") if r.get("capacity_status") in TRUSTED else None
            return (number(cap) or 0.0, -(r.get("stack_cpu_ms_per_request") or math.inf))
        cands = [r for r in rows if r["arch"] == arch]
        best = max(cands, key=score)
        default = next((r for r in cands if r["variant"] == "default"), None)
        entry = {"variant": best["variant"], "capacity_rps": best.get("capacity_rps"),
                 "capacity_status": best.get("capacity_status"),
                 "max_rps": best["max_rps"],
                 "stack_cpu_ms_per_request": best.get("stack_cpu_ms_per_request"),
                 "rss_mb": best.get("rss_mb")}
        if default is not None and default is not best:
            d, b = number(default.get("capacity_rps")), number(best.get("capacity_rps"))
            entry["over_default"] = b / d if d and b else None
        out[arch] = entry
    return out


def analyse(folder: str | Path) -> dict[str, Any]:
    """Experiment 4's analysis of every point, plus per row: the sweep, stack CPU ms per
    request, peak RSS, the ramp's curve and collapse; and the best build per architecture."""
    run = Path(folder)
    res = analyse_rungs(run)
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
    res["parser_pairs"] = parser_pairs(rows, res["variants"])
    # issue 26's split, where the run declared pairs (None else: earlier runs unchanged)
    res["factors"] = factors_report.analyse_factors(run, res, sources)
    res["headline"] = _headline(res)
    return res


def _build_without(variant: dict, setting: str) -> str:
    """A point's deploy variables minus one setting (and the restart token a later repeat's
    deploy carries): two points with the same are twins."""
    build = {}
    for key, value in (variant.get("deploy_vars") or {}).items():
        if key.endswith("_env"):
            value = {k: v for k, v in value.items() if k not in (setting, RESTART_VAR)}
        if value not in ({}, None):
            build[key] = value
    return json.dumps(build, sort_keys=True)


def parser_pairs(rows: list[dict], variants: dict[str, dict]) -> list[dict]:
    """Each point built with hiredis beside its twin, the same build with redis-py's Python
    parser, measured in the same run: capacities, and the CPU per request of the scoring
    handler (where the parser runs) and of the whole stack."""
    def parser(v: dict) -> str | None:
        envs = [e for k, e in (v.get("deploy_vars") or {}).items() if k.endswith("_env")]
        return next((e[PARSER_SETTING] for e in envs if PARSER_SETTING in e), None)

    pairs = []
    for r in rows:
        v = variants.get(r["variant"], {})
        if parser(v) != "hiredis":
            continue
        build = _build_without(v, PARSER_SETTING)
        twin = next((t for t in rows if t["arch"] == r["arch"] and t is not r
                     and parser(variants.get(t["variant"], {})) in (None, "python")
                     and _build_without(variants.get(t["variant"], {}), PARSER_SETTING) == build),
                    None)
        if twin is None:
            continue
        scoring = f"scoring-{r['arch']}"
        sides = {}
        for side, row in (("python", twin), ("hiredis", r)):
            sides[side] = {"variant": row["variant"], "capacity_rps": row.get("capacity_rps"),
                           "capacity_status": row.get("capacity_status"),
                           "scoring_cpu_ms_per_request":
                               row["cpu_ms_per_request"].get(scoring),
                           "stack_cpu_ms_per_request": row.get("stack_cpu_ms_per_request")}
        a, b = (number(sides[k]["capacity_rps"]) for k in ("python", "hiredis"))
        # With repeats (ABBA order), each repeat's ratio, the spread of the comparison itself
        # (None where either search of that repeat found no capacity).
        per = [twin.get("capacity_per_repeat") or [], r.get("capacity_per_repeat") or []]
        ratios = [h / p if number(p) and number(h) else None
                  for p, h in zip(*per, strict=True)] if len(per[0]) == len(per[1]) else []
        pairs.append({"arch": r["arch"], **sides,
                      "capacity_ratio": b / a if a and b else None,
                      "capacity_ratio_repeats": ratios})
    return pairs


def paired_ratios(p: dict) -> list[float | None]:
    """A parser pair's capacity ratios hiredis/Python, one per repeat where both ran in it
    (None where either search found none); a run without repeats: its one ratio. What the
    verdict and the headline both say."""
    if p["capacity_ratio_repeats"]:
        return list(p["capacity_ratio_repeats"])
    return [p["capacity_ratio"]]


def _headline(res: dict) -> dict[str, Any]:
    def r1(x):
        return None if number(x) is None else round(x, 1)
    return {"best": {arch: {"variant": b["variant"],
                            "capacity_rps": headline_capacity(number(b["capacity_rps"]),
                                                              b["capacity_status"]),
                            "stack_cpu_ms_per_request": (
                                None if b["stack_cpu_ms_per_request"] is None
                                else round(b["stack_cpu_ms_per_request"], 2)),
                            "rss_mb": r1(b["rss_mb"])}
                     for arch, b in res["best"].items()},
            "capacity_rps": {f"{r['variant']}/{r['arch']}": headline_capacity(
                number(r.get("capacity_rps")), r.get("capacity_status"))
                             for r in res["rows"] if "capacity_rps" in r},
            # the ratios the report's verdict weighs (paired within each repeat), not the
            # ratio of two medians that may come from different repeats
            **({"hiredis_over_python": {
                f"{p['hiredis']['variant']}/{p['arch']}": [
                    None if x is None else round(x, 2) for x in paired_ratios(p)]
                for p in res["parser_pairs"]}} if res["parser_pairs"] else {}),
            **({"factor_ratios": factors_report.headline(res["factors"])}
               if res.get("factors") else {})}


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
            if number(r.get("capacity_rps")):
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
        a, s = (number(res["best"][k]["capacity_rps"]) for k in ("async", "sync"))
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
             f"{TOP_LEVELS} levels), and the whole stack's CPU per answered request (scoring "
             f"handler, model API, Redis; errors included) pooled over the ramp's first levels "
             f"(their first {WINDOW_REQUESTS} requests or more) and over its top.", "",
             "| arch | sweep | point | capacity req/s | predicted req/s: ceiling / bounded | ramp "
             "peak req/s (users)"
             " | at top users | drop | ramp stack CPU ms/req low -> top | stack CPU ms/req "
             "| RSS MB | workers |", "|---" * 12 + "|"]
    for r in sorted(res["rows"], key=lambda r: (r["arch"] != "sync", r["sweep"], r["variant"])):
        c = r["collapse"] or {}
        cap = fmt(r.get("capacity_rps"))
        if r.get("capacity_status") and r["capacity_status"] != "found":
            cap += f" ({r['capacity_status']})"
        workers = ", ".join(workers_label(k, w) for k, w in r["workers"].items())
        low, top = (c.get(k) or {} for k in ("cpu_low", "cpu_top"))
        lines.append(
            f"| {r['arch']} | {r['sweep'] or '(default)'} | {r['variant']} | {cap} | "
            f"{fmt(r['predicted_rps'])} / {fmt(r.get('bounded_predicted_rps'))} | "
            f"{fmt(c.get('peak_rps'))} ({c.get('peak_users', '-')})"
            f" | {fmt(c.get('top_rps'))} ({c.get('top_users', '-')}) | {pct(c.get('drop'))} | "
            f"{fmt(low.get('stack_ms_per_request'), 2)} -> "
            f"{fmt(top.get('stack_ms_per_request'), 2)} | "
            f"{fmt(r['stack_cpu_ms_per_request'], 2)} | {fmt(r['rss_mb'], 0)} | {workers} |"
            + ("" if r["valid"] else " **invalid**"))
    falls = [r for r in res["rows"] if (r["collapse"] or {}).get("drop") is not None
             and r["collapse"]["drop"] > 0.15]
    if falls:
        lines += ["", "Throughput that falls past the knee (more than 15 % below its peak at the "
                  "highest concurrency):", ""]
        for r in falls:
            c = r["collapse"]
            lines.append(f"- {r['variant']}/{r['arch']}: {fmt(c['peak_rps'])} req/s at "
                         f"{c['peak_users']} users, {fmt(c['top_rps'])} at {c['top_users']} "
                         f"({pct(c['drop'])} less){_where_cpu_goes(c)}.")
    return [*lines, ""]


def _parser_lines(res: dict) -> list[str]:
    if not res["parser_pairs"]:
        return []
    lines = ["## Redis parser: hiredis against redis-py's Python parser", "",
             "Each hiredis point beside its twin (the same build with the Python parser, the "
             "lab's default), in this run. The parser runs in the scoring handler, so its CPU "
             "per request (over the step load) is where a saving shows; capacity is the "
             "search's (with repeats: the median), status in brackets where it did not close "
             "its bracket; hiredis/Python: with repeats the ratio per repeat, both searches of "
             "that repeat paired (\"-\" where either found none), then the ratio of the two "
             "medians, which may pair different repeats.", "",
             "| arch | point (Python -> hiredis) | capacity req/s | hiredis/Python | scoring "
             "handler CPU ms/req | stack CPU ms/req |", "|---" * 6 + "|"]
    for p in res["parser_pairs"]:
        py, hi = p["python"], p["hiredis"]

        def cap(side):
            text = fmt(side["capacity_rps"])
            status = side["capacity_status"]
            return text + (f" ({status})" if status and status != "found" else "")

        def each(x):
            return "-" if x is None else f"{x:.2f}"

        ratio = "-" if p["capacity_ratio"] is None else f"{p['capacity_ratio']:.2f}x"
        if len(p["capacity_ratio_repeats"]) > 1:  # the paired ratios first: the verdict's
            ratio = (f"per repeat {', '.join(each(x) for x in p['capacity_ratio_repeats'])} "
                     f"(of the medians {ratio})")
        lines.append(
            f"| {p['arch']} | {py['variant']} -> {hi['variant']} | {cap(py)} -> {cap(hi)} | "
            f"{ratio} | "
            f"{fmt(py['scoring_cpu_ms_per_request'], 2)} -> "
            f"{fmt(hi['scoring_cpu_ms_per_request'], 2)} | "
            f"{fmt(py['stack_cpu_ms_per_request'], 2)} -> "
            f"{fmt(hi['stack_cpu_ms_per_request'], 2)} |")
    lines += [""] + [f"- {_parser_verdict(p)}" for p in res["parser_pairs"]]
    return [*lines, ""]


def _parser_verdict(p: dict) -> str:
    """What one pair says: the scoring handler's CPU change, and whether the capacity ratios of
    the repeats tell a change apart from their own spread."""
    py, hi = p["python"], p["hiredis"]
    text = f"`{hi['variant']}`: "
    a, b = py["scoring_cpu_ms_per_request"], hi["scoring_cpu_ms_per_request"]
    if a and b is not None:
        text += (f"the scoring handler's CPU per request {b - a:+.2f} ms ({b / a - 1:+.0%}); ")
    ratios = [x for x in p["capacity_ratio_repeats"] if x is not None]
    if len(ratios) >= 2 and min(ratios) <= 1 <= max(ratios):
        text += (f"capacity ratios {min(ratios):.2f}-{max(ratios):.2f} over the repeats, "
                 "either side of 1: no capacity change this run tells apart from its spread")
    elif len(ratios) >= 2:
        text += (f"capacity ratios {min(ratios):.2f}-{max(ratios):.2f} over the repeats, all "
                 f"{'above' if min(ratios) > 1 else 'below'} 1")
    elif len(ratios) == 1:
        text += (f"capacity ratio {ratios[0]:.2f} in the one repeat where both searches found "
                 "a capacity: no spread to weigh it against")
    elif p["capacity_ratio"] is not None:
        text += (f"capacity ratio {p['capacity_ratio']:.2f} from one search each: no spread "
                 "to weigh it against")
    return text + "."


def _where_cpu_goes(c: dict) -> str:
    """What the CPU per request did between low concurrency and the top: a growth is named
    with the service it went to, and only claimed beyond CPU_CHANGE."""
    low, top = c.get("cpu_low"), c.get("cpu_top")
    a = low and low["stack_ms_per_request"]
    b = top and top["stack_ms_per_request"]
    if not a or not b:
        return ""
    ratio = b / a
    text = (f"; the stack's CPU per request is {a:.2f} ms at {low['users'][0]}-"
            f"{low['users'][1]} users and {b:.2f} ms at the top ({ratio:.2f}x")
    if ratio >= CPU_CHANGE:
        grew = {svc: top["ms_per_request"][svc] - low["ms_per_request"][svc]
                for svc in top["ms_per_request"]}
        svc = max(grew, key=grew.get)
        text += (f", {grew[svc]:+.2f} ms in {svc}): the same core does more work per answer "
                 "as concurrency grows")
    elif ratio <= 1 / CPU_CHANGE:
        text += "): less CPU per answer, so the fall is not the core doing more work per answer"
    else:
        text += "): about the same, so the fall is not more CPU per answer"
    if top.get("stack_cores") is not None:
        text += f"; at the top the stack keeps {top['stack_cores']:.2f} of a core busy"
    if top.get("error_fraction"):
        text += f" and {top['error_fraction']:.0%} of its answers are errors"
    return text


def render(res: dict, run: Path, plot: str | None, factors_plot: str | None = None) -> str:
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
    lines += ["", *_best_lines(res), *_sweep_lines(res), *_parser_lines(res),
              *factors_report.factor_lines(res.get("factors"), factors_plot)]
    if plot:
        lines += [f"![throughput and CPU against concurrency]({plot})", ""]
    lines += capacity_lines(res)
    lines += ["## The ceiling model per point", ""]
    lines += [f"- {r['variant']}/{r['arch']}: {r['model_sentence']}" for r in res["rows"]]
    lines += ["", *hardware_section(run), *footer_lines()]
    return "\n".join(lines)


def write_report(folder: str | Path, res: dict[str, Any]) -> Report:
    run = Path(folder)
    plot = _plot(run, res["rows"])
    factors_plot = factors_report.plot_waterfall(run, res.get("factors"))
    doc = {"rows": res["rows"], "best": res["best"], "parser_pairs": res["parser_pairs"],
           **({"factors": res["factors"]} if res.get("factors") else {}),
           **({"capacity": res["capacity"]} if res["capacity"] else {}),
           "headline": res["headline"]}
    return write_files(run, render(res, run, plot, factors_plot), doc, [plot, factors_plot])
