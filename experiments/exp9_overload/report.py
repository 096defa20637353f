"""Report of experiment 9 (overload and faults), from the result folder alone: per build and
architecture the overload sweep (offered load against goodput, errors by kind, p50/p99 of the
answers served, CPU per answered request, the time back to idle latency after it), the fault
timelines (per 1 s window: goodput, errors by kind, p99; per fault: time to detect and to
recover, requests lost and answered wrongly) and the metastability triggers (does goodput come
back to the offered load, and how fast). The per-request arithmetic is
experiments/analysis/timeline.py. Rebuildable:

    python -m experiments report results/<run folder>
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from experiments.analysis.summary import load_resource_samples, resource_usage
from experiments.analysis.timeline import (
    ERROR_KINDS,
    Record,
    fault_effect,
    goodput_return_s,
    read_records,
    shifted,
    summarise,
    windows,
)
from experiments.plots import plt
from experiments.reporting import (
    Report,
    fmt,
    footer_lines,
    hardware_section,
    header_lines,
    pct,
    write_files,
)

FAULT_FILE, TRIGGER_FILE, RECOVERY_FILE = "fault.json", "trigger.json", "recovery.json"
# the control timeline's kind (no fault, the same schedule: experiments/lab/faults.py NoFault)
CONTROL = "none"
STEP_DIR = re.compile(r"\d+_(?P<factor>[0-9.]+)x")
HEADLINE_FACTORS = (1.0, 2.0, 3.0)
# goodput "back" after a trigger: at this fraction of the offered load in every later window
RETURN_FRACTION = 0.9
# The goals a build is checked against (issue 25): at 2x offered load, goodput at least this
# fraction of the build's capacity with the served answers' p99 within the bound; every fault
# recovered within RECOVER_GOAL_S of its end with nothing lost; after each trigger, goodput
# back within RETURN_GOAL_S.
OVERLOAD_FACTOR, OVERLOAD_GOODPUT = 2.0, 0.9
RECOVER_GOAL_S, RETURN_GOAL_S = 2.0, 5.0


def _requests(d: Path) -> list[Record]:
    return read_records(sorted(d.glob("requests_*.csv")))


def _result(d: Path) -> dict[str, Any]:
    return json.loads((d / "result.json").read_text())


def _schedule(d: Path) -> tuple[float | None, float]:
    """(the schedule's start, unix s, or None; its length): each stream's own record."""
    starts = [json.loads(p.read_text()).get("schedule_start_unix")
              for p in d.glob("open_model_*.json")]
    starts = [s for s in starts if s]
    om = _result(d).get("open_model") or {}
    return (min(starts) if starts else None), float(om.get("schedule_s") or 0.0)


def _stack_cpu_s(sources: dict, arch: str, start: float, end: float) -> float | None:
    if not sources:
        return None
    use = resource_usage(sources, start, end)
    services = {f"scoring-{arch}", f"model-{arch}", "redis"}
    return sum(u["cpu_total_s"] for k, u in use.items() if k.split("/")[-1] in services)


def sweep_rows(arch_dir: Path, arch: str, bound_ms: float, capacity: float | None,
               sources: dict) -> list[dict[str, Any]]:
    rows = []
    for d in sorted(p for p in arch_dir.iterdir() if p.is_dir() and STEP_DIR.fullmatch(p.name)):
        if not (d / "result.json").exists():
            continue
        r = _result(d)
        _, span = _schedule(d)
        if not span:
            continue
        s = summarise(_requests(d), span, bound_ms)
        cpu = _stack_cpu_s(sources, arch, r["started_at"], r["ended_at"])
        rows.append({"factor": float(STEP_DIR.fullmatch(d.name)["factor"]),
                     "rate": (r.get("open_model") or {}).get("rate"),
                     "capacity": capacity, **s.to_dict(),
                     "cpu_ms_per_answer": (cpu * 1000 / s.answered
                                           if cpu is not None and s.answered else None),
                     "valid": r.get("valid", True), "reasons": r.get("reasons", [])})
    return rows


def _recovery(d: Path) -> dict[str, Any] | None:
    p = d / RECOVERY_FILE
    if not p.exists():
        return None
    r = json.loads(p.read_text())
    return {k: r.get(k) for k in ("recovered", "waited_s", "idle_ms", "threshold_ms")} | {
        "restarted": "restart" in r}


def _control(d: Path) -> tuple[list[Record], float] | None:
    """The control timeline's requests and its schedule's start (None: the run has none)."""
    if not (d / "result.json").exists():
        return None
    t0, _ = _schedule(d)
    return None if t0 is None else (_requests(d), t0)


def timeline(d: Path, record_file: str, params: dict[str, Any], bound_ms: float,
             extra: list[Record] = (),
             control: tuple[list[Record], float] | None = None) -> dict[str, Any] | None:
    """One fault's or trigger's run: its windows and what the fault did (recovery judged
    against ``control``, the no-fault timeline's requests and schedule start, when given)."""
    rec_path = d / record_file
    if not rec_path.exists() or not (d / "result.json").exists():
        return None
    record = json.loads(rec_path.read_text())
    records = sorted([*_requests(d), *extra], key=lambda r: r.scheduled)
    t0, span = _schedule(d)
    if t0 is None or not records or "started_at" not in record:
        return {"record": record, "effect": None, "windows": [], "t0": t0}
    end = t0 + span
    start, stop = record["started_at"], record.get("ended_at", end)
    if extra:  # a burst: its own stream's first and last arrivals are the trigger
        start, stop = min(r.scheduled for r in extra), max(r.scheduled for r in extra)
    start, stop = min(max(start, t0), end), min(max(stop, t0), end)
    width = float(params.get("window_s", 1.0))
    ref = shifted(control[0], t0 - control[1]) if control is not None else None
    effect = fault_effect(records, start, max(start, stop), end, width_s=width,
                          tolerance=float(params.get("tolerance", 1.5)), bound_ms=bound_ms,
                          control=ref)
    ws = windows(records, t0, end, width, bound_ms)
    return {"record": record, "t0": t0, "start_s": start - t0, "end_s": stop - t0,
            "effect": effect.to_dict(), "windows": [w.to_dict() for w in ws],
            "_windows": ws}


def analyse(folder: str | Path) -> dict[str, Any]:
    run = Path(folder)
    manifest = json.loads((run / "manifest.json").read_text())
    proto = manifest.get("protocol") or {}
    bound = float(proto.get("bound_ms") or proto.get("capacity", {}).get("p99_bound_ms", 250))
    faults_p = proto.get("faults") or {}
    meta_p = proto.get("metastability") or {}
    sources = load_resource_samples(run / "raw" / "resources")
    root = run / "raw" / "locust"
    cells: dict[str, dict[str, Any]] = {}
    for entry in manifest.get("builds") or []:
        build = entry["name"]
        for arch in proto.get("architectures") or []:
            sweep_dir = root / "sweep" / build / arch
            if not sweep_dir.is_dir():
                continue
            cap = ((proto.get("build") or {}).get(build, {}).get("capacity_rps") or {}).get(
                arch, (proto.get("capacity_rps") or {}).get(arch))
            cell: dict[str, Any] = {
                "build": build, "arch": arch, "capacity": cap,
                "sweep": sweep_rows(sweep_dir, arch, bound, cap, sources),
                "idle": _recovery(sweep_dir / "idle"),
                "after_sweep": _recovery(sweep_dir / "recovery"),
                "faults": {}, "metastability": {}}
            fault_root = root / "faults" / build / arch
            control = _control(fault_root / CONTROL)
            for d in sorted(fault_root.glob("*")):
                t = timeline(d, FAULT_FILE, faults_p, bound,
                             control=None if d.name == CONTROL else control)
                if t is not None:
                    cell["faults"][d.name] = t
            for d in sorted((root / "metastability" / build / arch).glob("*")):
                burst = _requests(d / "burst") if (d / "burst").is_dir() else []
                t = timeline(d, TRIGGER_FILE, faults_p, bound, burst)
                if t is None:
                    continue
                target = float(meta_p.get("load", 0.9)) * (cap or 0)
                t["offered_rps"] = target
                t["return_s"] = (goodput_return_s(t["_windows"], t["end_s"], RETURN_FRACTION)
                                 if t.get("_windows") else None)
                cell["metastability"][d.name] = t
            cells[f"{build}/{arch}"] = cell
    res = {"manifest": manifest, "bound_ms": bound, "cells": cells}
    res["goals"] = {key: goals(c, bound) for key, c in cells.items()}
    res["headline"] = _headline(res)
    return res


def goals(cell: dict, bound_ms: float) -> dict[str, Any]:
    """One cell against issue 25's goals: each part None where the run did not measure it,
    else its figures and `met` (True/False)."""
    out: dict[str, Any] = {"overload": None, "faults": None, "metastability": None}
    row, cap = _at(cell["sweep"], OVERLOAD_FACTOR), cell["capacity"]
    if row is not None and cap:
        ratio = row["goodput_rps"] / cap
        p99 = row["p99_ms"]
        out["overload"] = {"goodput_ratio": round(ratio, 3), "p99_ms": p99,
                           "met": ratio >= OVERLOAD_GOODPUT and p99 is not None
                           and p99 <= bound_ms}
    effects = {name: t["effect"] or {} for name, t in cell["faults"].items()
               if name != CONTROL}  # the control is what the goal is judged against
    if effects:
        missed = [name for name, e in effects.items()
                  if e.get("lost") or e.get("wrong") or e.get("recover_s") is None
                  or e["recover_s"] > RECOVER_GOAL_S]
        out["faults"] = {"missed": missed, "met": not missed}
    if cell["metastability"]:
        back = {n: t.get("return_s") for n, t in cell["metastability"].items()}
        out["metastability"] = {
            "return_s": back,
            "met": all(b is not None and b <= RETURN_GOAL_S for b in back.values())}
    return out


def _at(rows: list[dict], factor: float) -> dict | None:
    return next((r for r in rows if math.isclose(r["factor"], factor)), None)


def _round(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def _headline(res: dict) -> dict[str, Any]:
    goodput, faults, meta = {}, {}, {}
    for key, c in res["cells"].items():
        goodput[key] = {f"{f:g}x": _round((_at(c["sweep"], f) or {}).get("goodput_rps"))
                        for f in HEADLINE_FACTORS if _at(c["sweep"], f)}
        goodput[key]["recover_s"] = _round((c["after_sweep"] or {}).get("waited_s"))
        for name, t in c["faults"].items():
            e = t["effect"] or {}
            faults[f"{key}/{name}"] = {"detect_s": _round(e.get("detect_s")),
                                       "detect_by": e.get("detect_by"),
                                       "recover_s": _round(e.get("recover_s")),
                                       "lost": e.get("lost"), "wrong": e.get("wrong")}
        for name, t in c["metastability"].items():
            meta[f"{key}/{name}"] = {"return_s": _round(t.get("return_s"))}
    return {"bound_ms": res["bound_ms"], "goodput": goodput, "faults": faults,
            "metastability": meta}


def headline(res: dict) -> dict[str, Any]:
    """Goodput at 1x, 2x, 3x per build and architecture; per fault, detect, recover, lost,
    wrong; per trigger, how long goodput took to come back."""
    return res["headline"]


# ---------------------------------------------------------------------------------- plots


def _plot_sweep(run: Path, res: dict, build: str) -> str | None:
    cells = [c for c in res["cells"].values() if c["build"] == build and c["sweep"]]
    if not cells:
        return None
    fig, axes = plt.subplots(1, len(cells), figsize=(5.5 * len(cells), 4), squeeze=False)
    for ax, c in zip(axes[0], cells, strict=True):
        xs = [r["offered_rps"] for r in c["sweep"]]
        ax.plot(xs, xs, color="grey", linestyle=":", label="offered")
        ax.plot(xs, [r["goodput_rps"] for r in c["sweep"]], marker="o", label="goodput")
        if c["capacity"]:
            ax.axhline(c["capacity"], color="tab:green", linestyle="--", label="capacity")
        ax.set(title=f"{build} / {c['arch']}", xlabel="offered (req/s)",
               ylabel=f"goodput (req/s, p99 <= {res['bound_ms']:g} ms)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    name = f"plot_sweep_{build}.png"
    fig.savefig(run / name, dpi=90)
    plt.close(fig)
    return name


def _plot_timeline(run: Path, res: dict, part: str, name: str) -> str | None:
    cells = [(k, c[part][name]) for k, c in res["cells"].items()
             if name in c[part] and c[part][name].get("windows")]
    if not cells:
        return None
    fig, axes = plt.subplots(len(cells), 1, figsize=(8, 2.6 * len(cells)), squeeze=False)
    for ax, (key, t) in zip(axes[:, 0], cells, strict=True):
        ws = t["windows"]
        xs = [w["t"] for w in ws]
        ax.plot(xs, [w["goodput_rps"] for w in ws], label="goodput/s", color="tab:blue")
        ax.bar(xs, [sum(w["errors"].values()) for w in ws], width=0.8, align="edge",
               color="tab:red", alpha=0.5, label="errors")
        ax.axvspan(t["start_s"], t["end_s"], color="orange", alpha=0.2, label=name)
        ax2 = ax.twinx()
        ax2.plot(xs, [w["p99_ms"] if w["p99_ms"] is not None else math.nan for w in ws],
                 color="black", linestyle=":", label="p99 ms")
        ax2.set_ylabel("p99 (ms)")
        ax.set(title=key, xlabel="s from the schedule's start", ylabel="req/s")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    out = f"plot_{part}_{name}.png"
    fig.savefig(run / out, dpi=90)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------- render


def _detect(e: dict) -> str:
    if e.get("detect_s") is None:
        return "n/a"
    return f"{fmt(e['detect_s'], 2)} ({e.get('detect_by') or 'error'})"


def _errors(e: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in e.items() if v) or "none"


def _capacity_lines(proto: dict) -> list[str]:
    """Where each 1x came from: a closed experiment-5 search (the lowest found across the
    named runs, every figure read listed) or the config's own number; per architecture, and
    per build for a build with a capacity of its own."""
    source = proto.get("capacity_source") or {}
    if not source:  # runs before capacity_from
        return ["Capacities (1x) are the configured figures (config `capacity_rps`), "
                "not searched here."]
    figures = dict(proto.get("capacity_rps") or {})
    for name, b in (proto.get("build") or {}).items():
        for arch, rps in (b.get("capacity_rps") or {}).items():
            figures[f"{name}/{arch}"] = rps
    out = ["Capacity (1x), not searched here:"]
    for key, rps in figures.items():
        src, arch = source.get(key), key.rsplit("/", 1)[-1]
        if isinstance(src, dict):
            read = "; ".join(f"{Path(f['run']).name[:16]} {fmt(f['capacity_rps'])} "
                             f"({f['status']}{'' if f['status'] == 'found' else ', not used'})"
                             for f in src["figures"].get(arch, []))
            out.append(f"- {key}: **{fmt(rps)} req/s**, the {src['rule']} of experiment 5's "
                       f"`{src['variant']}` build ({read})")
        else:
            out.append(f"- {key}: {fmt(rps)} req/s ({src or 'config capacity_rps'})")
    return out


def _met(part: dict | None) -> str:
    return "not measured" if part is None else ("**met**" if part["met"] else "**missed**")


def _goal_lines(res: dict) -> list[str]:
    """Issue 25's goals per build and architecture: what met them, and by which figures."""
    bound = res["bound_ms"]
    out = ["## Goals", "",
           f"Overload: at {OVERLOAD_FACTOR:g}x offered load, goodput >= "
           f"{OVERLOAD_GOODPUT:.0%} of capacity and the served answers' p99 within {bound:g} "
           f"ms. Faults: each recovered within {RECOVER_GOAL_S:g} s of its end, none lost or "
           f"answered wrongly. Metastability: goodput back within {RETURN_GOAL_S:g} s of each "
           "trigger's end.", "",
           "| build/arch | overload | goodput / capacity | p99 ms | faults | missed by | "
           "metastability | back after s |", "|---|---|---|---|---|---|---|---|"]
    for key, g in res["goals"].items():
        o, f, m = g["overload"], g["faults"], g["metastability"]
        back = ", ".join(f"{n} {fmt(b, 1) if b is not None else 'never'}"
                         for n, b in (m or {}).get("return_s", {}).items()) or "-"
        out.append(f"| {key} | {_met(o)} | "
                   f"{pct(o['goodput_ratio']) if o else '-'} | "
                   f"{fmt(o['p99_ms']) if o else '-'} | {_met(f)} | "
                   f"{', '.join(f['missed']) if f and f['missed'] else '-'} | {_met(m)} | "
                   f"{back} |")
    return [*out, ""]


def _side_by_side(res: dict) -> list[str]:
    """Per architecture measured by more than one build: goodput (and the served p99) at each
    load, the builds in columns, so a control (a fixed limit, no admission control) sits
    beside the build it is the control of."""
    out: list[str] = []
    for arch in dict.fromkeys(c["arch"] for c in res["cells"].values()):
        cells = [c for c in res["cells"].values() if c["arch"] == arch and c["sweep"]]
        if len(cells) < 2:
            continue
        if not out:
            out += ["## Builds side by side", "",
                    "Goodput req/s (p99 ms of the answers served) per load, one column per "
                    "build; the loads are multiples of each build's own capacity.", ""]
        factors = sorted({r["factor"] for c in cells for r in c["sweep"]})
        out += [f"### {arch}", "", "| load | " + " | ".join(c["build"] for c in cells) + " |",
                "|---|" + "---|" * len(cells)]
        for f in factors:
            row = [_at(c["sweep"], f) for c in cells]
            out.append(f"| {f:g}x | " + " | ".join(
                f"{fmt(r['goodput_rps'])} ({fmt(r['p99_ms'])})" if r else "-" for r in row)
                + " |")
        out.append("")
    return out


def render(res: dict, run: Path, plots: dict[str, str | None]) -> str:
    m = res["manifest"]
    lines = header_lines(m, run)
    bound = res["bound_ms"]
    lines += ["## Builds", ""]
    for b in m.get("builds") or []:
        lines.append(f"- **{b['name']}**: {b.get('description', '')}")
    lines += ["", f"Goodput: answers within the shared p99 bound ({bound:g} ms, from each "
              "request's scheduled time) per second.", ""]
    lines += _capacity_lines(m.get("protocol") or {})
    lines += ["", *_goal_lines(res), *_side_by_side(res)]
    lines += ["## Overload sweep", ""]
    for key, c in res["cells"].items():
        after = c["after_sweep"] or {}
        idle = c["idle"] or {}
        lines += [f"### {key} (capacity {fmt(c['capacity'])} req/s)", "",
                  "| load | offered req/s | goodput req/s | answered | p50 ms | p99 ms | "
                  "errors | CPU ms/answer |", "|---|---|---|---|---|---|---|---|"]
        for r in c["sweep"]:
            lines.append(
                f"| {r['factor']:g}x | {fmt(r['offered_rps'])} | {fmt(r['goodput_rps'])} | "
                f"{r['answered']} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | "
                f"{_errors(r['errors'])} | {fmt(r['cpu_ms_per_answer'], 2)} |"
                + ("" if r["valid"] else " INVALID"))
        lines += ["", f"After the sweep: back to idle latency ({fmt(idle.get('idle_ms'))} ms, "
                  f"within {fmt(after.get('threshold_ms'))} ms) after "
                  f"{fmt(after.get('waited_s'))} s"
                  + ("" if after.get("recovered", True) else " (NOT recovered)")
                  + (", restarted" if after.get("restarted") else "") + ".", ""]
        if plots.get(c["build"]):
            lines += [f"![{c['build']}]({plots[c['build']]})", ""]
    lines += ["## Fault timelines", "",
              "Detect: the fault's start to the first failed answer to a request scheduled "
              "from its start, or answer later than 1.5x the pre-fault p99 to one scheduled "
              "while it was on (a fault that fails nothing shows in latency); how it was seen "
              "in brackets. "
              "Recover: the fault's end "
              "to the first 1 s window from which every window is error-free with p99 within "
              "1.5x the pre-fault p99, or no worse than the control's same window (no more "
              "errors, p99 within 1.5x its) when the run has one: `none`, the same arrival "
              "schedule without a fault, whose own recover figure (judged without a control) "
              "is what the schedule alone does. Lost: accepted and never answered (reset, client "
              "timeout, unfinished). Wrong: HTTP 200 without a numeric answer.", "",
              "| build/arch | fault | pre-fault p99 ms | detect s | recover s | failed | "
              "lost | wrong | errors | removal |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, c in res["cells"].items():
        for name, t in c["faults"].items():
            e, rec = t["effect"] or {}, t["record"]
            removal = rec.get("stop_error") or rec.get("error") or "ok"
            lines.append(f"| {key} | {name} | {fmt(e.get('baseline_p99_ms'))} | "
                         f"{_detect(e)} | {fmt(e.get('recover_s'), 1)} | "
                         f"{e.get('failed', 'n/a')} | {e.get('lost', 'n/a')} | "
                         f"{e.get('wrong', 'n/a')} | {_errors(e.get('errors') or {})} | "
                         f"{removal} |")
    lines.append("")
    for name, p in plots.items():
        if name.startswith("faults/") and p:
            lines += [f"![{name}]({p})", ""]
    meta = [(k, n, t) for k, c in res["cells"].items() for n, t in c["metastability"].items()]
    if meta:
        lines += ["## Metastability", "",
                  f"Goodput back: from the trigger's end, the first 1 s window from which every "
                  f"window answers at least {RETURN_FRACTION:.0%} of its own arrivals within the "
                  "bound. Worst p99: the highest window p99 from the trigger's start on.", "",
                  "| build/arch | trigger | offered req/s | back after s | worst p99 ms | "
                  "errors after start |", "|---|---|---|---|---|---|"]
        for key, name, t in meta:
            e = t["effect"] or {}
            back = t.get("return_s")
            worst = max((w["p99_ms"] for w in t.get("windows") or []
                         if w["p99_ms"] is not None and w["t"] >= t.get("start_s", 0)),
                        default=None)
            lines.append(f"| {key} | {name} | {fmt(t.get('offered_rps'))} | "
                         f"{fmt(back, 1) if back is not None else 'not within the run'} | "
                         f"{fmt(worst)} | {_errors(e.get('errors') or {})} |")
        lines.append("")
        for name, p in plots.items():
            if name.startswith("metastability/") and p:
                lines += [f"![{name}]({p})", ""]
    lines += [*hardware_section(run), *footer_lines()]
    return "\n".join(lines)


def write_report(folder: str | Path, res: dict[str, Any]) -> Report:
    run = Path(folder)
    plots: dict[str, str | None] = {}
    for b in {c["build"] for c in res["cells"].values()}:
        plots[b] = _plot_sweep(run, res, b)
    for part in ("faults", "metastability"):
        for name in sorted({n for c in res["cells"].values() for n in c[part]}):
            plots[f"{part}/{name}"] = _plot_timeline(run, res, part, name)
    cells = {k: {**c, "faults": {n: {x: v for x, v in t.items() if x != "_windows"}
                                 for n, t in c["faults"].items()},
                 "metastability": {n: {x: v for x, v in t.items() if x != "_windows"}
                                   for n, t in c["metastability"].items()}}
             for k, c in res["cells"].items()}
    doc = {"bound_ms": res["bound_ms"], "error_kinds": list(ERROR_KINDS), "cells": cells,
           "goals": res["goals"], "headline": res["headline"]}
    return write_files(run, render(res, run, plots), doc, sorted(p for p in plots.values() if p))
