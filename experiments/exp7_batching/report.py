"""Report of experiment 7 (batching), from the result folder alone. Each point is analysed as a
ladder rung (experiments/analysis/ladder.py: the 1-user latency, the step load's CPU per
request, the capacity at the shared bound re-derived from its steps), and this adds what a
batching comparison asks: the batches the model formed at each load level (its counters
before and after every Locust run), the device's utilisation, what batching adds to the 1-user
p50 against its max wait, and per device whether batching wins or only adds latency
(experiments/exp7_batching/batches.py). Rebuildable:

    python -m experiments report results/<run folder>
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.analysis.capacity import step_dirs, step_result
from experiments.analysis.ladder import analyse_rungs, capacity_dir
from experiments.analysis.manifest import analysis_params
from experiments.exp7_batching.batches import (
    histogram,
    pooled,
    regime,
    size_line,
    size_percentile,
    utilisation,
)
from experiments.exp7_batching.counters import COUNTERS_FILE
from experiments.repeats import locust_roots
from experiments.reporting import (
    LOWER_BOUNDS,
    Report,
    capacity_status,
    fmt,
    footer_lines,
    hardware_section,
    header_lines,
    headline_capacity,
    number,
    write_files,
)

ON_DEMAND = "on-demand"  # the build batching is weighed against ([batching.models])


def _counters(d: Path) -> dict[str, Any] | None:
    f = d / COUNTERS_FILE
    return histogram(json.loads(f.read_text())) if f.exists() else None


def _levels(run: Path, res: dict, r: dict) -> list[dict[str, Any]]:
    """Every load level of one row with the batches it formed: the 1-user probe, the step
    load (its whole ramp), each capacity step (rate, hold, outcome, p99, device busy share)."""
    out = []
    for e in res["manifest"].get("scenarios") or []:
        if (e.get("variant"), e.get("arch"), e.get("role", "scoring"), e.get("repeat", 1)) != \
                (r["variant"], r["arch"], "scoring", 1):
            continue
        h = _counters(run / e["locust"]["dir"])
        if h is not None:
            label = "1 user" if e.get("step", "").startswith("probe") else "step load (ramp)"
            out.append({"level": label, "rate": None, "outcome": None, "p99_ms": None,
                        "hold": False, "histogram": h, "utilisation": None})
    entry = ((res["capacity"].get(r["variant"]) or {}).get(r["arch"]) or {}).get("shared") or {}
    # the search's records (sorted by rate when replayed), each matched to its folder
    verdicts: dict[tuple, list[dict]] = {}
    for s in entry.get("steps") or []:
        verdicts.setdefault(_step_key(s["rate"], s.get("hold"), s.get("duration_s")),
                            []).append(s)
    grace_s = analysis_params(res["manifest"])[1].grace_s
    for d in step_dirs(capacity_dir(locust_roots(run / "raw")[0][1], r["variant"], r["arch"])):
        h = _counters(d)
        if h is None:
            continue
        step = step_result(d, grace_s=grace_s)
        found = verdicts.get(_step_key(step.rate, step.hold, step.duration_s)) or [{}]
        s = found.pop(0) if len(found) > 1 else found[0]
        out.append({"level": f"{step.rate:.1f} req/s" + (" hold" if step.hold else ""),
                    "rate": step.rate, "hold": step.hold, "outcome": s.get("outcome"),
                    "p99_ms": step.p99_response_ms, "histogram": h,
                    "utilisation": utilisation(h, step.duration_s)})
    return out


def _step_key(rate: float, hold: bool | None, duration_s: float | None) -> tuple:
    return round(rate, 6), bool(hold), round(duration_s or 0.0, 3)


def _at_capacity(levels: list[dict], capacity: float | None) -> dict | None:
    """The last passed capacity step at the capacity's rate (a hold when there was one)."""
    if not number(capacity):
        return None
    at = [lv for lv in levels if lv["rate"] is not None and lv["outcome"] == "pass"
          and abs(lv["rate"] - capacity) < 1e-6]
    return at[-1] if at else None


def _max_wait(levels: list[dict]) -> float | None:
    for lv in levels:
        model = lv["histogram"].get("model") or {}
        if model.get("batch_max_wait_ms") is not None:
            return float(model["batch_max_wait_ms"])
    return None


def analyse(folder: str | Path) -> dict[str, Any]:
    """Per (point, scoring architecture): the ladder's numbers plus the model build, device,
    load levels with their batches, the batches at capacity, the stack's CPU per request; per
    device and scoring architecture, batching's regime against on-demand."""
    run = Path(folder)
    res = analyse_rungs(run)
    meta = (res["manifest"].get("ladder") or {}).get("batching") or {}
    rows = []
    for r in (r for r in res["rows"] if r["arrival"] == "spread"):
        v = res["variants"].get(r["variant"], {})
        levels = _levels(run, res, r)
        cpu = r["cpu_ms_per_request"]
        # the model server this point's handler calls (BentoML's own service, say)
        model = v.get("model_server") or f"model-{r['arch']}"
        parts = [cpu.get(f"scoring-{r['arch']}"), cpu.get(model), cpu.get("redis")]
        at = _at_capacity(levels, r.get("capacity_rps"))
        entry = ((res["capacity"].get(r["variant"]) or {}).get(r["arch"]) or {}).get("shared")
        facts = next((lv["histogram"] for lv in levels if lv["histogram"].get("model")), {})
        rows.append({**r, "model_build": v.get("model"), "device": v.get("device"),
                     "slots": v.get("slots"), "model_server": v.get("model_server") or "",
                     "architecture": f"{r['arch']} scoring + {v.get('model')}",
                     "levels": levels, "max_wait_ms": _max_wait(levels),
                     "served_by": {"model": facts.get("model"), "slots": facts.get("slots"),
                                   "batching": facts.get("batching")},
                     "at_capacity": at,
                     "capacity_upper_rps": _confident_failure(entry or {}),
                     "stack_cpu_ms_per_request": (sum(parts) if all(p is not None
                                                                    for p in parts) else None)})
    res["rows"] = rows
    res["regimes"] = regimes(rows, float(meta.get("margin", 0.10)))
    res["headline"] = _headline(res)
    return res


def _side(r: dict) -> dict[str, Any]:
    """What regime() reads of a row: one notion of where its capacity ends, the lowest rate
    its search confidently failed (`capacity_upper_rps`)."""
    return {"capacity_rps": r.get("capacity_rps"), "failed_rps": r.get("capacity_upper_rps"),
            "p50_1_user_ms": r.get("p50_1_user_ms")}


def regimes(rows: list[dict], margin: float) -> list[dict[str, Any]]:
    """Each batching row against the on-demand row of the same scoring architecture and
    device: the verdict, its numbers, the max wait and batch sizes at capacity beside them."""
    out = []
    for r in rows:
        if r["model_build"] == ON_DEMAND:
            continue
        twin = next((t for t in rows if t["model_build"] == ON_DEMAND and t["arch"] == r["arch"]
                     and t["device"] == r["device"]), None)
        if twin is None:
            continue
        at = r.get("at_capacity")
        out.append({"architecture": r["architecture"], "against": twin["architecture"],
                    "device": r["device"], "slots": r["slots"], "arch": r["arch"],
                    **regime(_side(r), _side(twin), margin),
                    "batching_status": r.get("capacity_status"),
                    "on_demand_status": twin.get("capacity_status"),
                    "batching_upper_rps": _upper_bound(r),
                    "on_demand_upper_rps": _upper_bound(twin),
                    "max_wait_ms": r["max_wait_ms"],
                    "mean_batch_at_capacity": at["histogram"]["item_mean_size"] if at else None})
    return out


def _headline(res: dict) -> dict[str, Any]:
    def r1(x):
        return None if number(x) is None else round(x, 1)

    def figure(r):  # a lower bound as ">= x", an upper bound as "< x"
        upper = _upper_bound(r)
        if upper is not None:
            return f"< {r1(upper)}"
        return headline_capacity(r.get("capacity_rps"), r.get("capacity_status"))

    return {"capacity_rps": {f"{r['architecture']} / {r['device']}": figure(r)
                             for r in res["rows"] if "capacity_rps" in r},
            "regime": {f"{g['architecture']} / {g['device']}": g["regime"]
                       for g in res["regimes"]},
            "added_p50_1_user_ms": {f"{g['architecture']} / {g['device']}":
                                    r1(g["added_p50_ms"]) for g in res["regimes"]}}


def headline(res: dict) -> dict[str, Any]:
    """Every architecture's capacity per device, batching's regime and its added 1-user p50."""
    return res["headline"]


# ------------------------------------------------------------------------------ markdown


def _upper_bound(r: dict) -> float | None:
    """A search that passed nothing and confidently failed a rate: the capacity is below the
    lowest such rate (an undecided rate bounds nothing; `capacity_upper_rps`, set by analyse
    from the search's steps)."""
    if number(r.get("capacity_rps")) is None and number(r.get("capacity_upper_rps")):
        return r["capacity_upper_rps"]
    return None


def _confident_failure(entry: dict[str, Any]) -> float | None:
    failed = [s["rate"] for s in entry.get("steps") or []
              if s.get("outcome") == "fail" and not s.get("superseded")]
    return min(failed) if failed else None


def _capacity(r: dict) -> str:
    if "capacity_rps" not in r:
        return "no search"
    upper = _upper_bound(r)
    if upper is not None:
        return f"< {fmt(upper)} (upper bound: passed nothing, confidently failed {fmt(upper)})"
    value = fmt(r["capacity_rps"])
    if r.get("capacity_status") in LOWER_BOUNDS and number(r["capacity_rps"]):
        return f">= {value} (lower bound)"
    if r.get("capacity_status") != "found":
        return f"{value} ({r.get('capacity_status')})"
    return value


def _model_text(r: dict) -> str:
    m = r["served_by"].get("model") or {}
    if not m:
        return "not read (no counters)"
    slots = r["served_by"].get("slots")
    text = (f"{m['sleep_ms'][0]:g}-{m['sleep_ms'][1]:g} ms per prediction, "
            f"+{m['device_per_item_ms']:g} ms per further item, "
            + (f"{slots} device slot(s)" if slots else "no device limit"))
    if m.get("cpu_burn_ms") or m.get("cpu_burn_per_item_ms"):
        text += f", CPU {m['cpu_burn_ms']:g} ms + {m['cpu_burn_per_item_ms']:g} ms per item"
    if m.get("bentoml_max_latency_ms") is not None:
        # BentoML decides its own waits; its knob is the latency it refuses (503) beyond
        text += (f"; BentoML batches of at most {m['batch_max_size']} items, "
                 f"{m['bentoml_max_latency_ms']:g} ms max latency")
    elif m.get("batch_max_size") is not None:
        text += (f"; micro-batches of at most {m['batch_max_size']} items, "
                 f"{m['batch_max_wait_ms']:g} ms max wait")
    if slots is not None and r["slots"] is not None and slots != r["slots"]:
        text += f" (**the config asked for {r['slots']} slot(s)**)"
    return text


def _limit(slots: int | None) -> str:
    return "no device limit" if slots == 0 else f"{slots} slot(s)" if slots else "device ?"


def _verdict_line(g: dict) -> str:
    ratio = (f"{g['ratio']:.2f}x" if g["ratio"] else
             f"at least {g['ratio_at_least']:.1f}x" if g.get("ratio_at_least") else "n/a")
    b = _capacity({"capacity_rps": g["batching_rps"], "capacity_status": g["batching_status"],
                   "capacity_upper_rps": g.get("batching_upper_rps")})
    o = _capacity({"capacity_rps": g["on_demand_rps"], "capacity_status": g["on_demand_status"],
                   "capacity_upper_rps": g.get("on_demand_upper_rps")})
    added = g["added_p50_ms"]
    latency = ("no 1-user p50 to compare" if added is None else
               f"at 1 user it {'adds' if added >= 0 else 'saves'} {abs(added):.1f} ms of p50"
               + (f" (max wait {g['max_wait_ms']:g} ms)" if g["max_wait_ms"] is not None
                  else ""))
    batch = (f"; requests travel in batches of {g['mean_batch_at_capacity']:.1f} on average at "
             "its capacity" if g["mean_batch_at_capacity"] else "")
    return (f"- **{g['device']}, {g['architecture']} against {g['against']}: "
            f"{g['regime']}** ({g['why']}): capacity {b} against {o} req/s ({ratio}); "
            f"{latency}{batch}.")


def render(res: dict, run: Path) -> str:
    lines = header_lines(res["manifest"], run)
    rows = sorted(res["rows"], key=lambda r: (str(r["device"]), r["arch"],
                                               str(r["model_build"])))
    lines += ["## The model measured", "",
              "As the model server itself reported it (its debug endpoint, read around every "
              "run), per point:", ""]
    seen = set()
    for r in rows:
        if r["variant"] not in seen:
            seen.add(r["variant"])
            lines.append(f"- `{r['variant']}` ({r['model_build']} on device {r['device']}): "
                         f"{_model_text(r)}.")
    failed = [v for v in res["variants"].values() if v.get("failed")]
    if failed:
        lines += ["", "Points that could not be measured (the deploy log under raw/deploy/ "
                  "says why):", ""] + [f"- **{v['name']}**: {v['failed']}" for v in failed]
    bound = next((r["capacity_p99_bound_ms"] for r in rows if "capacity_p99_bound_ms" in r),
                 None)
    lines += ["", "## Capacity, latency and cost", "",
              f"Capacity: the highest open-model rate whose p99 (from each request's scheduled "
              f"send) met {fmt(bound, 0)} ms, re-derived from the search's steps; where the "
              "search did not close its bracket it is a lower bound and written as one. p50 at "
              "1 user: the probe's. Batch size: the mean batch a request travelled in at the "
              "capacity step (the model's counters). Device busy: slot-seconds held over the "
              "step (no limit: predictions in flight on average). CPU: scoring handler + model "
              "server + Redis, ms per request over the step load.", "",
              "| device | architecture | capacity req/s | first failing req/s | p50 at 1 user ms "
              "| batch size at capacity | device busy at capacity | stack CPU ms/req |",
              "|---" * 8 + "|"]
    for r in rows:
        at = r.get("at_capacity")
        h = at["histogram"] if at else None
        lines.append(
            f"| {r['device']} | {r['architecture']} | {_capacity(r)} | "
            f"{fmt(r.get('first_overloaded_rps'))} | {fmt(r.get('p50_1_user_ms'))} | "
            f"{fmt(h['item_mean_size'], 2) if h and h['item_mean_size'] else '-'} | "
            f"{fmt(at['utilisation'], 2) if at and at['utilisation'] is not None else '-'} | "
            f"{fmt(r.get('stack_cpu_ms_per_request'), 2)} |"
            + ("" if r["valid"] else " **invalid**"))
    statuses = [f"{r['architecture']} on {r['device']}: {capacity_status(entry)}"
                for r in rows
                if (entry := ((res["capacity"].get(r["variant"]) or {}).get(r["arch"]) or {})
                    .get("shared")) and entry.get("status") != "found"]
    if statuses:
        lines += ["", "Searches that did not close their bracket:", ""]
        lines += [f"- {s}" for s in statuses]
    lines += ["", "## Where batching wins", "",
              "Each batching architecture against on-demand on the same device and scoring "
              "handler. Batching wins when its capacity passed a rate on-demand failed (beyond "
              "the margin); it only adds latency when the searches do not tell the capacities "
              "apart and its 1-user p50 is higher (only lowers it when lower).", ""]
    if res["regimes"]:
        lines += ["In this run: " + "; ".join(
            f"on {g['device']} ({_limit(g['slots'])}), {g['architecture']}: **{g['regime']}**"
            for g in res["regimes"]) + ".", ""]
    lines += [_verdict_line(g) for g in res["regimes"]] or ["- no batching point with an "
                                                            "on-demand twin was measured"]
    lines += ["", "## Batch sizes per load level", "",
              "Batches the model formed during each run (size x batches), from its per-worker "
              "counters before and after; workers: those counted of those expected (a worker "
              "missed by the polls leaves its batches out).", ""]
    for r in rows:
        lines += [f"### {r['architecture']}, device {r['device']}", "",
                  "| level | outcome | p99 ms | batches | items | sizes | mean per request | "
                  "p90 per request | device busy | workers |", "|---" * 10 + "|"]
        for lv in r["levels"]:
            h = lv["histogram"]
            lines.append(
                f"| {lv['level']} | {lv['outcome'] or '-'} | {fmt(lv['p99_ms'])} | "
                f"{h['batches']} | {h['items']} | {size_line(h['sizes'])} | "
                f"{fmt(h['item_mean_size'], 2)} | "
                f"{fmt(size_percentile(h['sizes'], 90), 0)} | "
                f"{fmt(lv['utilisation'], 2)} | {h['workers_counted']}/"
                f"{h['workers_expected'] if h['workers_expected'] is not None else '?'}"
                + ("" if h["complete"] else " (incomplete)") + " |")
        every = pooled([lv["histogram"] for lv in r["levels"]])
        lines += ["", f"All levels: {size_line(every, top=10)}.", ""]
    lines += [*hardware_section(run), *footer_lines()]
    return "\n".join(lines)


def write_report(folder: str | Path, res: dict[str, Any]) -> Report:
    run = Path(folder)
    doc = {"rows": [{k: v for k, v in r.items() if k not in ("model", "breaking_point")}
                    for r in res["rows"]],
           "regimes": res["regimes"], "headline": res["headline"]}
    return write_files(run, render(res, run), doc, [])
