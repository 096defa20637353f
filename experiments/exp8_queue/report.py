"""Report of experiment 8 (the job queue), from the result folder alone: per architecture and
offered load, the queue (submit latency, time to result and where it went: the wait in the
queue, the work, the poll's lag; throughput, rejections and how every job ended, polls per job,
queue depth, the queue workers' CPU utilisation) beside the in-line
endpoint at the same schedule (goodput within the shared bound, p50/p99, errors); the queue's
own capacity read off those steps; with the long-poll variant (``client.wait_s``), the same
for clients whose polls wait for the job's end (``?wait=``), judged against the shared bound
itself (no poll interval to allow for); the burst: the queue's depth, rejections and completions
second by second and its time to drain, against the in-line stack's goodput and errors under
the same burst. The arithmetic is experiments/analysis/jobs.py (jobs) and
experiments/analysis/timeline.py (in-line requests). Rebuildable:

    python -m experiments report results/<run folder>
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from experiments.analysis.jobs import (
    WORKER_TIMES_FILE,
    depth_between,
    depth_stats,
    drain_s,
    job_windows,
    queue_capacity,
    read_depth,
    read_jobs,
    read_worker_times,
    summarise_jobs,
    worker_split,
)
from experiments.analysis.summary import load_resource_samples, resource_usage
from experiments.analysis.timeline import goodput_return_s, read_records, summarise, windows
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

DEPTH_FILE, TRIGGER_FILE = "queue_depth.csv", "trigger.json"
# The queue workers' utilisation over time: resource samples come every second, so windows of
# a few samples keep one sample's jitter out of the curve.
UTILISATION_WINDOW_S = 2.0
STEP_DIR = re.compile(r"\d+_(?P<factor>[0-9.]+)x")
WINDOW_S = 1.0


def _schedule(d: Path) -> tuple[float | None, float]:
    """(the schedule's start, unix s, or None; its length): each stream's own record."""
    starts = [json.loads(p.read_text()).get("schedule_start_unix")
              for p in d.glob("open_model_*.json")]
    starts = [s for s in starts if s]
    result = d / "result.json"
    om = (json.loads(result.read_text()).get("open_model") or {}) if result.exists() else {}
    return (min(starts) if starts else None), float(om.get("schedule_s") or 0.0)


def _result(d: Path) -> dict[str, Any]:
    p = d / "result.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _utilisation(sources: dict, arch: str, cores: int | None, start: float,
                 end: float) -> float | None:
    """The queue workers' CPU over [start, end] as a fraction of their CPU set: the mean CPU
    percent over the span the window's samples cover (a window's first sample may come up to
    a sampling interval after it opens; dividing by the window's whole length would read that
    interval as idle)."""
    if not sources or not cores or end <= start:
        return None
    use = resource_usage(sources, start, end)
    pct = [u["cpu_percent_mean"] for k, u in use.items()
           if k.split("/")[-1] == f"queue-{arch}" and u["cpu_percent_mean"] is not None]
    return sum(pct) / 100 / cores if pct else None


def _queue_step(d: Path, ctx: dict[str, Any]) -> dict[str, Any] | None:
    t0, span = _schedule(d)
    if t0 is None or not span:
        return None
    r = _result(d)
    records = read_jobs(sorted(d.glob("jobs_*.csv")))
    s = summarise_jobs(records, span, ctx["job_bound"], ctx["max_error_fraction"],
                       ctx["confidence"])
    wait = json.loads((d / "wait.json").read_text()) if (d / "wait.json").exists() else {}
    return {**s.to_dict(), "rate": (r.get("open_model") or {}).get("rate"),
            "worker": worker_split(records, read_worker_times(d / WORKER_TIMES_FILE)),
            "depth": depth_stats(depth_between(ctx["depth"], t0, t0 + span)),
            "utilisation": _utilisation(ctx["sources"], ctx["arch"], ctx["cores"], t0,
                                        r.get("ended_at") or t0 + span),
            "inflight_cap_hits": (r.get("open_model") or {}).get("inflight_cap_hits"),
            "started_empty": wait.get("empty"),
            "valid": r.get("valid", True), "reasons": r.get("reasons", [])}


def _inline_step(d: Path, bound_ms: float) -> dict[str, Any] | None:
    t0, span = _schedule(d)
    if t0 is None or not span:
        return None
    r = _result(d)
    s = summarise(read_records(sorted(d.glob("requests_*.csv"))), span, bound_ms)
    return {**s.to_dict(), "rate": (r.get("open_model") or {}).get("rate"),
            "valid": r.get("valid", True), "reasons": r.get("reasons", [])}


def _levels(root: Path, ctx: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    if not root.is_dir():
        return rows
    # a long poll answers as the job ends: its time to result has no poll interval to allow for
    wait_ctx = {**ctx, "job_bound": ctx["bound"]}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and STEP_DIR.fullmatch(p.name)):
        rows.append({"factor": float(STEP_DIR.fullmatch(d.name)["factor"]),
                     "queue": _queue_step(d / "queue", ctx),
                     "wait": _queue_step(d / "wait", wait_ctx),
                     "inline": _inline_step(d / "inline", ctx["bound"])})
    return rows


def _capacity(levels: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    """The capacity of the job steps of `kind` over the levels (a step whose generator could
    not keep its schedule says nothing about the queue)."""
    steps = [(row[kind]["rate"], row[kind]["verdict"]) for row in levels
             if row.get(kind) and row[kind]["rate"] and row[kind]["valid"]]
    return queue_capacity(steps).to_dict() if steps else None


def _trigger_span(d: Path, scheduled: list[float]) -> tuple[float, float] | None:
    """The burst's first and last arrivals (its own stream's), else its record's times."""
    if scheduled:
        return min(scheduled), max(scheduled)
    p = d / TRIGGER_FILE
    rec = json.loads(p.read_text()) if p.exists() else {}
    return (rec["started_at"], rec["ended_at"]) if "ended_at" in rec else None


def _queue_burst(d: Path, ctx: dict[str, Any], params: dict[str, Any]) -> dict[str, Any] | None:
    t0, span = _schedule(d)
    if t0 is None or not span:
        return None
    base = read_jobs(sorted(d.glob("jobs_*.csv")))
    extra = read_jobs(sorted((d / "burst").glob("jobs_*.csv")))
    span_t = _trigger_span(d, [r.scheduled for r in extra])
    if span_t is None:
        return None
    start, end = span_t
    jobs = sorted([*base, *extra], key=lambda r: r.scheduled)
    r = _result(d)
    last = r.get("ended_at") or t0 + span
    depth = depth_between(ctx["depth"], t0, last)
    rejected = [j.scheduled for j in jobs if j.outcome == "rejected"]
    s = summarise_jobs(jobs, span, ctx["job_bound"], ctx["max_error_fraction"],
                       ctx["confidence"])
    times = {**read_worker_times(d / WORKER_TIMES_FILE),
             **read_worker_times(d / "burst" / WORKER_TIMES_FILE)}
    return {
        "t0": t0, "start_s": start - t0, "end_s": end - t0, "span_s": span,
        "summary": s.to_dict(), "worker": worker_split(jobs, times),
        "peak_depth": max((v for _, v in depth), default=None),
        "first_rejection_s": (min(rejected) - start) if rejected else None,
        "drain_s": drain_s(ctx["depth"], end, int(params.get("drain_depth", 1))),
        "drain_depth": int(params.get("drain_depth", 1)),
        "depth": depth,
        "windows": [w.to_dict() for w in job_windows(jobs, t0, last, WINDOW_S,
                                                     ctx["job_bound"])],
        "utilisation": _utilisation(ctx["sources"], ctx["arch"], ctx["cores"], t0, last),
        "utilisation_series": _utilisation_series(ctx, t0, last),
        "valid": r.get("valid", True) and _result(d / "burst").get("valid", True)}


def _utilisation_series(ctx: dict[str, Any], t0: float, t1: float) -> list[list[float]]:
    """[s from t0, the queue workers' CPU over their set] per UTILISATION_WINDOW_S window
    (empty without resource samples)."""
    out = []
    t = t0
    while t + UTILISATION_WINDOW_S <= t1 + 1e-9:
        u = _utilisation(ctx["sources"], ctx["arch"], ctx["cores"], t, t + UTILISATION_WINDOW_S)
        if u is not None:
            out.append([round(t - t0, 3), u])
        t += UTILISATION_WINDOW_S
    return out


def _inline_burst(d: Path, bound_ms: float) -> dict[str, Any] | None:
    t0, span = _schedule(d)
    if t0 is None or not span:
        return None
    extra = read_records(sorted((d / "burst").glob("requests_*.csv")))
    span_t = _trigger_span(d, [r.scheduled for r in extra])
    if span_t is None:
        return None
    start, end = span_t
    records = sorted([*read_records(sorted(d.glob("requests_*.csv"))), *extra],
                     key=lambda r: r.scheduled)
    ws = windows(records, t0, t0 + span, WINDOW_S, bound_ms)
    s = summarise(records, span, bound_ms)
    return {"t0": t0, "start_s": start - t0, "end_s": end - t0, "summary": s.to_dict(),
            "served_again_s": goodput_return_s(ws, end - t0, fraction=1.0), "bound_ms": bound_ms,
            "windows": [w.to_dict() for w in ws],
            "valid": _result(d).get("valid", True) and _result(d / "burst").get("valid", True)}


def analyse(folder: str | Path) -> dict[str, Any]:
    run = Path(folder)
    manifest = json.loads((run / "manifest.json").read_text())
    proto = manifest.get("protocol") or {}
    cap_p = proto.get("capacity") or {}
    bound = float(proto.get("bound_ms") or cap_p.get("p99_bound_ms", 250))
    poll_s = float((proto.get("client") or {}).get("poll_interval_s", 0.0))
    job_bound = float(proto.get("job_bound_ms") or bound + poll_s * 1000)
    services = (manifest.get("topology") or {}).get("services") or {}
    sources = load_resource_samples(run / "raw" / "resources")
    burst_p = proto.get("burst") or {}
    # a step's verdict: the capacity protocol's confidence (0.95); without one, 95 %
    confidence = float(cap_p.get("confidence") or 0.95)
    cells: dict[str, Any] = {}
    for arch in proto.get("architectures") or []:
        cap = (proto.get("capacity_rps") or {}).get(arch)
        ctx = {"arch": arch, "bound": bound, "job_bound": job_bound,
               "max_error_fraction": float(cap_p.get("max_error_fraction", 0.01)),
               "confidence": confidence,
               "depth": read_depth(run / "raw" / DEPTH_FILE, arch), "sources": sources,
               "cores": len((services.get(f"queue-{arch}") or {}).get("cpus") or []) or None}
        levels = _levels(run / "raw" / "locust" / "levels" / arch, ctx)
        burst_root = run / "raw" / "locust" / "burst" / arch
        cells[arch] = {
            "arch": arch, "capacity": cap, "levels": levels,
            "queue_capacity": _capacity(levels, "queue"),
            "wait_capacity": _capacity(levels, "wait"),
            "burst": {"queue": _queue_burst(burst_root / "queue", ctx, burst_p),
                      "inline": _inline_burst(burst_root / "inline", bound)}}
    res = {"manifest": manifest, "bound_ms": bound, "job_bound_ms": job_bound,
           "confidence": confidence,
           "poll_interval_s": poll_s, "wait_s": (proto.get("client") or {}).get("wait_s"),
           "cells": cells}
    res["headline"] = _headline(res)
    return res


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def _headline(res: dict) -> dict[str, Any]:
    # the deployed default build's queue and in-line stacks (experiments/constants.py)
    out: dict[str, Any] = {"builds": DEFAULT_BUILDS, "bound_ms": res["bound_ms"],
                           "job_bound_ms": res["job_bound_ms"]}
    for arch, c in res["cells"].items():
        rows = [r for r in c["levels"] if r["queue"]]
        low = rows[0] if rows else None
        at1 = next((r for r in rows if r["factor"] == 1.0), None)
        bq, bi = c["burst"]["queue"] or {}, c["burst"]["inline"] or {}
        out[arch] = {
            "low_load_factor": low["factor"] if low else None,
            "ttr_p50_ms_low": _round(low["queue"]["ttr_p50_ms"]) if low else None,
            "ttr_p99_ms_low": _round(low["queue"]["ttr_p99_ms"]) if low else None,
            "ttr_p50_ms_1x": _round(at1["queue"]["ttr_p50_ms"]) if at1 else None,
            "ttr_p99_ms_1x": _round(at1["queue"]["ttr_p99_ms"]) if at1 else None,
            "completion_p50_ms_low": _round(low["queue"]["worker"]["completion_p50_ms"])
            if low else None,
            "completion_p50_ms_1x": _round(at1["queue"]["worker"]["completion_p50_ms"])
            if at1 else None,
            "inline_p99_ms_1x": _round((at1["inline"] or {}).get("p99_ms")) if at1 else None,
            "queue_capacity_rps": (c["queue_capacity"] or {}).get("figure"),
            **_wait_headline(c, low, at1),
            "burst_drain_s": _round(bq.get("drain_s")),
            "burst_rejected": (bq.get("summary") or {}).get("rejected"),
            "inline_burst_failed": (sum((bi.get("summary") or {}).get("errors", {}).values())
                                    if bi else None),
            "inline_burst_served_again_s": _round(bi.get("served_again_s"))}
    return out


def _wait_headline(c: dict, low: dict | None, at1: dict | None) -> dict[str, Any]:
    """The long-poll variant's time to result at the lowest load and at 1x, and its capacity
    (nothing when the run had no such steps)."""
    if not any(r.get("wait") for r in c["levels"]):
        return {}
    def ttr(row, q):  # noqa: E306 - one line per figure below
        return _round(((row or {}).get("wait") or {}).get(f"ttr_{q}_ms"))
    return {"wait_ttr_p50_ms_low": ttr(low, "p50"), "wait_ttr_p99_ms_low": ttr(low, "p99"),
            "wait_ttr_p50_ms_1x": ttr(at1, "p50"), "wait_ttr_p99_ms_1x": ttr(at1, "p99"),
            "wait_capacity_rps": (c["wait_capacity"] or {}).get("figure")}


def headline(res: dict) -> dict[str, Any]:
    """Per architecture: time to result (and submit to worker completion) at the lowest load
    and at 1x, the queue's capacity, the burst's drain time and rejections, the in-line
    stack's failures under the burst and how long until it answered every request in time."""
    return res["headline"]


# ---------------------------------------------------------------------------------- plots


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def _plot_levels(run: Path, res: dict) -> str | None:
    cells = [c for c in res["cells"].values() if c["levels"]]
    if not cells:
        return None
    fig, axes = plt.subplots(1, len(cells), figsize=(5.5 * len(cells), 4), squeeze=False)
    for ax, c in zip(axes[0], cells, strict=True):
        q = [(r["queue"]["rate"], r["queue"]) for r in c["levels"] if r["queue"]]
        i = [(r["inline"]["rate"], r["inline"]) for r in c["levels"] if r["inline"]]
        ax.plot([x for x, _ in q], [_nan(s["ttr_p99_ms"]) for _, s in q], marker="o",
                label="queue: time to result p99")
        ax.plot([x for x, _ in q], [_nan(s["ttr_p50_ms"]) for _, s in q], marker=".",
                linestyle="--", label="queue: time to result p50")
        w = [(r["wait"]["rate"], r["wait"]) for r in c["levels"] if r.get("wait")]
        if w:
            ax.plot([x for x, _ in w], [_nan(s["ttr_p99_ms"]) for _, s in w], marker="^",
                    label="long polls: time to result p99")
        ax.plot([x for x, _ in i], [_nan(s["p99_ms"]) for _, s in i], marker="s",
                label="in-line: p99")
        ax.axhline(res["job_bound_ms"], color="tab:red", linestyle=":",
                   label=f"job bound {res['job_bound_ms']:g} ms")
        ax.set_yscale("log")
        ax.set(title=c["arch"], xlabel="offered (per s)", ylabel="ms (from the scheduled send)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run / "plot_levels.png", dpi=90)
    plt.close(fig)
    return "plot_levels.png"


def _plot_burst(run: Path, res: dict, arch: str) -> str | None:
    c = res["cells"][arch]
    bq, bi = c["burst"]["queue"], c["burst"]["inline"]
    if not bq and not bi:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    if bq:
        ws = bq["windows"]
        xs = [w["t"] for w in ws]
        top.plot([t for t, _ in bq["depth"]], [d for _, d in bq["depth"]], color="black",
                 label="jobs waiting (Redis)")
        top.plot(xs, [w["completed"] for w in ws], color="tab:green", label="done/s")
        top.bar(xs, [w["rejected"] for w in ws], width=0.8, align="edge", color="tab:red",
                alpha=0.5, label="rejected/s")
        top.axvspan(bq["start_s"], bq["end_s"], color="orange", alpha=0.2, label="burst")
        top.set(title=f"{arch}: queue", ylabel="jobs")
        top.legend(fontsize=7, loc="upper right")
        series = bq.get("utilisation_series") or []
        if series:
            util = top.twinx()
            util.plot([t for t, _ in series], [100 * u for _, u in series], color="tab:purple",
                      linestyle="--", label="queue workers' CPU (% of their set)")
            util.set(ylabel="CPU %", ylim=(0, 105))
            util.legend(fontsize=7, loc="upper left")
    if bi:
        ws = bi["windows"]
        xs = [w["t"] for w in ws]
        bottom.plot(xs, [w["goodput_rps"] for w in ws], color="tab:blue", label="goodput/s")
        bottom.bar(xs, [sum(w["errors"].values()) for w in ws], width=0.8, align="edge",
                   color="tab:red", alpha=0.5, label="errors/s")
        bottom.axvspan(bi["start_s"], bi["end_s"], color="orange", alpha=0.2, label="burst")
        bottom.set(title=f"{arch}: in-line", ylabel="requests/s")
        bottom.legend(fontsize=7, loc="upper right")
    bottom.set_xlabel("s from the base load's schedule start")
    fig.tight_layout()
    name = f"plot_burst_{arch}.png"
    fig.savefig(run / name, dpi=90)
    plt.close(fig)
    return name


# ---------------------------------------------------------------------------------- render


def _outcomes(o: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in o.items() if v and k != "done") or "none"


def _errors(e: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in e.items() if v) or "none"


def _capacity_text(qc: dict | None) -> str:
    status = (qc or {}).get("status")
    if status == "found":
        return (f"**{fmt(qc['rps'], 2)} jobs/s** (the next decided step, "
                f"{fmt(qc['failed_at_rps'], 2)}/s, confidently failed)")
    if status == "lower_bound":
        return (f"**>= {fmt(qc['rps'], 2)} jobs/s** (a lower bound: no step confidently "
                "failed)")
    if status == "upper_bound":
        return (f"**< {fmt(qc['failed_at_rps'], 2)} jobs/s** (an upper bound: "
                f"{fmt(qc['failed_at_rps'], 2)}/s confidently failed and no step below it "
                "passed)")
    return "not measured: no step was decided (each too short to pass, none confidently over)"


def _p99_cell(q: dict) -> str:
    """The time to result p50 / p99, marked when the p99 is over the bound, and the step's
    verdict at its confidence (what the capacity reads)."""
    over = "" if q.get("meets_bound") else " (over)"
    return (f"{fmt(q.get('ttr_p50_ms'))} / {fmt(q.get('ttr_p99_ms'))}{over}, "
            f"{q.get('verdict', 'n/a')}")


def _level_lines(c: dict) -> list[str]:
    lines = ["| load | offered/s | queue: submit p50/p99 ms | time to result p50/p99 ms, "
             "verdict | done/s | not done | polls/job | depth mean/max | worker CPU | "
             "in-line: goodput/s | p50/p99 ms | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in c["levels"]:
        q, i = r["queue"] or {}, r["inline"] or {}
        d = q.get("depth") or {}
        util = q.get("utilisation")
        flag = "" if q.get("valid", True) and i.get("valid", True) else " INVALID"
        lines.append(
            f"| {r['factor']:g}x | {fmt(q.get('rate'))} | {fmt(q.get('submit_p50_ms'))} / "
            f"{fmt(q.get('submit_p99_ms'))} | {_p99_cell(q)} | "
            f"{fmt(q.get('throughput_rps'))} | {_outcomes(q.get('outcomes') or {})} | "
            f"{fmt(q.get('polls_per_job'))} | {fmt(d.get('mean'))} / {d.get('max', 'n/a')} | "
            f"{'n/a' if util is None else f'{util:.0%}'} | {fmt(i.get('goodput_rps'))} | "
            f"{fmt(i.get('p50_ms'))} / {fmt(i.get('p99_ms'))} | "
            f"{_errors(i.get('errors') or {})} |{flag}")
    return lines


def _wait_lines(c: dict) -> list[str]:
    """The long-poll steps: each poll waits for the job's end, so the poll's lag is a Redis
    notice's and the polls per job count the waits that ran out."""
    lines = ["| load | offered/s | submit p50/p99 ms | time to result p50/p99 ms, verdict | "
             "done/s | "
             "not done | polls/job | poll lag p50/p99 ms | in-line p50/p99 ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in c["levels"]:
        q, i = r.get("wait") or {}, r["inline"] or {}
        if not q:
            continue
        w = q.get("worker") or {}
        flag = "" if q.get("valid", True) else " INVALID"
        lines.append(
            f"| {r['factor']:g}x | {fmt(q.get('rate'))} | {fmt(q.get('submit_p50_ms'))} / "
            f"{fmt(q.get('submit_p99_ms'))} | {_p99_cell(q)} | "
            f"{fmt(q.get('throughput_rps'))} | {_outcomes(q.get('outcomes') or {})} | "
            f"{fmt(q.get('polls_per_job'))} | {fmt(w.get('poll_lag_p50_ms'))} / "
            f"{fmt(w.get('poll_lag_p99_ms'))} | {fmt(i.get('p50_ms'))} / "
            f"{fmt(i.get('p99_ms'))} |{flag}")
    return lines


def _split_lines(c: dict) -> list[str]:
    """Where a done job's time went, from the queue's own records (experiments/lab/
    job_times.py)."""
    lines = ["| load | jobs | submit -> worker done p50/p99 ms | queue wait p50/p99 ms | "
             "work p50/p99 ms | poll lag p50/p99 ms |", "|---|---|---|---|---|---|"]
    for r in c["levels"]:
        w = (r["queue"] or {}).get("worker") or {}
        lines.append(f"| {r['factor']:g}x | {w.get('jobs', 0)} | " + " | ".join(
            f"{fmt(w.get(f'{k}_p50_ms'))} / {fmt(w.get(f'{k}_p99_ms'))}"
            for k in ("completion", "queue_wait", "work", "poll_lag")) + " |")
    return lines


def _peak_utilisation(bq: dict) -> str:
    """The queue workers' mean and highest CPU over their set in the burst run's windows."""
    series = [u for _, u in bq.get("utilisation_series") or []]
    if not series:
        return "n/a"
    return (f"{sum(series) / len(series):.0%} mean, {max(series):.0%} at the most "
            f"({UTILISATION_WINDOW_S:g} s windows)")


def _burst_lines(arch: str, c: dict) -> list[str]:
    bq, bi = c["burst"]["queue"], c["burst"]["inline"]
    out = [f"### {arch}", ""]
    if bq:
        s = bq["summary"]
        drain = bq["drain_s"]
        out += [f"- queue: {s['jobs']} jobs, {s['accepted']} accepted, **{s['rejected']} "
                f"rejected**"
                + (f" (the first {fmt(bq['first_rejection_s'])} s into the burst)"
                   if bq["first_rejection_s"] is not None else "")
                + f"; peak depth {bq['peak_depth']}; queue workers' CPU "
                + _peak_utilisation(bq) + "; time to result p50/p99 "
                f"{fmt(s['ttr_p50_ms'])} / {fmt(s['ttr_p99_ms'])} ms (submit -> worker done "
                f"{fmt(bq['worker']['completion_p50_ms'])} / "
                f"{fmt(bq['worker']['completion_p99_ms'])} ms); not done: "
                f"{_outcomes(s['outcomes'])}; **drained** (at most {bq['drain_depth']} "
                f"waiting) "
                + (f"**{fmt(drain)} s** after the burst's end" if drain is not None
                   else "**not within the run**")
                + ("" if bq["valid"] else " (INVALID run)")]
    if bi:
        s = bi["summary"]
        back = bi["served_again_s"]
        out += [f"- in-line: {s['requests']} requests, goodput {fmt(s['goodput_rps'])}/s, "
                f"p99 {fmt(s['p99_ms'])} ms, errors: {_errors(s['errors'])}; every request "
                f"answered within {fmt(bi['bound_ms'], 0)} ms again "
                + (f"**{fmt(back)} s** after the burst's end" if back is not None
                   else "**not within the run**")
                + ("" if bi["valid"] else " (INVALID run)")]
    return out + [""]


def render(res: dict, run: Path, plots: dict[str, str | None]) -> str:
    m = res["manifest"]
    proto = m.get("protocol") or {}
    b = proto.get("burst") or {}
    lines = header_lines(m, run)
    lines += ["## What was measured", "",
              f"Job clients submit and poll every {res['poll_interval_s']:g} s until the job "
              "ends (open model, Poisson arrivals); the same schedules go to the in-line "
              "predict endpoint. Time to result: from the scheduled submit to the answer of "
              "the first poll that saw the job done. Submit -> worker done: from the scheduled "
              "submit to the end the queue recorded for the job (its status does not show it: "
              "read from Redis after each step; handler, worker and generator share one "
              "clock on one host). A job step meets the bound when "
              f"its time to result p99 is within {res['job_bound_ms']:g} ms (the shared "
              f"{res['bound_ms']:g} ms plus one poll interval) with at most "
              f"{(proto.get('capacity') or {}).get('max_error_fraction', 0.01):.0%} of its "
              "jobs not done (a point estimate, marked \"over\" when missed); its verdict, "
              "what the queue's capacity reads, judges the share of jobs not done within that "
              f"bound at {res['confidence']:.0%} confidence (experiments/analysis/tail.py: a "
              "step of fewer than 299 jobs cannot pass). In-line goodput: answers within the "
              "shared bound per second. "
              "Depth: jobs waiting in Redis, sampled every "
              f"{fmt((proto.get('depth') or {}).get('interval_s'), 1)} s (so a drain time is "
              "good to that). Worker CPU: the queue workers' CPU "
              "over their CPU set (on one host they share the scoring handlers' cores).", ""]
    for arch, rps in (proto.get("capacity_rps") or {}).items():
        src = (proto.get("capacity_source") or {}).get(arch)
        where = (f"the {src['rule']} of experiment 5's `{src['variant']}` build"
                 if isinstance(src, dict) else (src or "config capacity_rps"))
        lines.append(f"- 1x for {arch}: {fmt(rps)} req/s ({where})")
    lines += ["", "## Levels", ""]
    for arch, c in res["cells"].items():
        lines += [f"### {arch} (1x = {fmt(c['capacity'])}/s)", "", *_level_lines(c), "",
                  "Where a done job's time went (the queue's own records, read after each "
                  "step):", "", *_split_lines(c), "",
                  "The queue's capacity (a step sweep over these levels' valid steps, not the "
                  f"capacity search): {_capacity_text(c['queue_capacity'])}.", ""]
        if any(r.get("wait") for r in c["levels"]):
            lines += [f"Long polls (each waits up to {fmt(res['wait_s'])} s for the job's "
                      f"end; bound: the shared {res['bound_ms']:g} ms):", "", *_wait_lines(c),
                      "", f"Their capacity: {_capacity_text(c['wait_capacity'])}.", ""]
    if plots.get("levels"):
        lines += [f"![levels]({plots['levels']})", ""]
    lines += ["## Burst", "",
              f"{fmt(b.get('base'), 2)}x for {fmt(b.get('before_s'))} s, "
              f"{fmt(b.get('factor'))}x for {fmt(b.get('burst_s'))} s, then "
              f"{fmt(b.get('base'), 2)}x for {fmt(b.get('after_s'))} s.", ""]
    for arch, c in res["cells"].items():
        lines += _burst_lines(arch, c)
        if plots.get(f"burst/{arch}"):
            lines += [f"![burst {arch}]({plots[f'burst/{arch}']})", ""]
    lines += [*hardware_section(run), *footer_lines()]
    return "\n".join(lines)


def write_report(folder: str | Path, res: dict[str, Any]) -> Report:
    run = Path(folder)
    plots: dict[str, str | None] = {"levels": _plot_levels(run, res)}
    for arch in res["cells"]:
        plots[f"burst/{arch}"] = _plot_burst(run, res, arch)
    doc = {"bound_ms": res["bound_ms"], "job_bound_ms": res["job_bound_ms"],
           "cells": res["cells"], "headline": res["headline"]}
    return write_files(run, render(res, run, plots), doc, sorted(p for p in plots.values() if p))
