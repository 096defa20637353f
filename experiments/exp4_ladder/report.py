"""Report of experiment 4 (the delta decomposition), from the result folder alone: per variant
the 1-user latency, breaking point, max requests/s and CPU per request per service (cut from
the resource samples with each run's stored window), the ceiling model's prediction beside the
measurement, the decomposition sentences and the ladder plot. Rebuildable:

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

from experiments.analysis import ceiling, pinning, queueing  # noqa: E402
from experiments.analysis.breaking_point import detect_breaking_point, rule_sentence  # noqa: E402
from experiments.analysis.capacity import analyse_search, step_dirs  # noqa: E402
from experiments.analysis.repeat_figures import summary_of  # noqa: E402
from experiments.analysis.stats import compare  # noqa: E402
from experiments.analysis.summary import (  # noqa: E402
    analyse_run_dir,
    load_resource_samples,
    resource_usage,
)
from experiments.exp4_ladder.run import capacity_dir  # noqa: E402
from experiments.protocol import CapacityParams  # noqa: E402
from experiments.repeats import locust_roots  # noqa: E402
from experiments.reporting import (  # noqa: E402
    Report,
    analysis_params,
    capacity_section,
    fmt,
    footer_lines,
    hardware_section,
    header_lines,
    number,
    pct,
    write_files,
)

LOW_LOAD_USERS = 10  # "low load" in a ramp: seconds with at most this many users
PROBE_WARMUP_S = 1.0  # the probe's first second (connection set-up) is left out


def _svc(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _low_load_p50(rd) -> float | None:
    """Median latency of successful requests sent while the ramp had <= LOW_LOAD_USERS."""
    ser, req = rd.series, rd.requests
    low = np.flatnonzero((ser.users > 0) & (ser.users <= LOW_LOAD_USERS))
    if not len(low) or not len(req):
        return None
    t_cut = ser.t0 + float(ser.t[low[-1]]) + 1.0
    sel = req.ok & (req.start < t_cut)
    return float(np.median(req.rt_ms[sel])) if sel.any() else None


def analyse(folder: str | Path) -> dict[str, Any]:
    """Every number of the report: {"probes", "loads", "rows", "decomposition", ...}."""
    run = Path(folder)
    manifest = json.loads((run / "manifest.json").read_text())
    analysis, guard = analysis_params(manifest)
    sources = load_resource_samples(run / "raw" / "resources")
    topo = manifest.get("topology") or {}
    variants = {v["name"]: v for v in manifest.get("variants") or []}
    probes: dict[tuple[str, str, str], dict[str, Any]] = {}  # (variant, role, arch)
    probe_rt: dict[tuple[str, str, str], np.ndarray] = {}
    loads: dict[tuple[str, str, str], dict[str, Any]] = {}  # (variant, arch, arrival)
    # Probes and step loads: repeat 1's (the only one in a run of one); capacities: every
    # repeat's, as a median and spread per rung (_capacities).
    for e in manifest.get("scenarios") or []:
        if e.get("repeat", 1) != 1:
            continue
        d = run / e["locust"]["dir"]
        if not (d / "scenario.json").exists():
            continue
        variant, arch, step = e.get("variant"), e["arch"], e.get("step", "")
        if step.startswith("probe"):
            rd = analyse_run_dir(d, warmup_s=PROBE_WARMUP_S, lag_s=analysis.breaking_point.lag_s)
            n = rd.numbers
            key = (variant, e.get("role", "scoring"), arch)
            probes[key] = {"p50_ms": n.p50_ms, "p95_ms": n.p95_ms, "mean_ms": n.mean_ms,
                           "requests": n.requests, "failures": n.failures, "valid": n.valid,
                           "total_requests": n.total_requests, "dir": e["locust"]["dir"]}
            probe_rt[key] = rd.window_rt_ms
            continue
        rd = analyse_run_dir(d, warmup_s=analysis.warmup_s, lag_s=analysis.breaking_point.lag_s)
        bp = detect_breaking_point(rd.series, analysis.breaking_point)
        n = rd.numbers
        cpu = {}
        if sources and n.started_at and n.ended_at and n.total_requests:
            for name, u in resource_usage(sources, n.started_at, n.ended_at).items():
                if _svc(name) in {f"scoring-{arch}", f"model-{arch}", "redis", "loadgen"}:
                    cpu[_svc(name)] = u["cpu_total_s"] / n.total_requests
        loads[(variant, arch, e.get("arrival") or "spread")] = {
            "breaking_point": bp, "max_rps": bp.max_achieved_rps,
            "low_load_p50_ms": _low_load_p50(rd), "total_requests": n.total_requests,
            "failures": n.total_failures, "valid": n.valid, "reasons": list(n.reasons),
            "cpu_s_per_request": cpu, "window": [n.started_at, n.ended_at],
            "dir": e["locust"]["dir"],
            "model_connections": _model_connections(sources, arch, n.started_at, n.ended_at)}
    rows = []
    inputs = {}  # the ceiling's inputs per row, for the bounded prediction beside it
    for (variant, arch, arrival), load in loads.items():
        v = variants.get(variant, {})
        inputs[(variant, arch, arrival)] = _services(v, arch, load, probes, topo)
        model = ceiling.predict(inputs[(variant, arch, arrival)][0])
        rows.append({
            "variant": variant, "arch": arch, "arrival": arrival,
            "p50_1_user_ms": (probes.get((variant, "scoring", arch)) or {}).get("p50_ms"),
            "mean_1_user_ms": (probes.get((variant, "scoring", arch)) or {}).get("mean_ms"),
            "model_hold_ms": (probes.get((variant, "model", arch)) or {}).get("mean_ms"),
            "low_load_p50_ms": load["low_load_p50_ms"],
            "breaking_point_users": load["breaking_point"].users,
            "breaking_point": load["breaking_point"].message,
            "max_rps": load["max_rps"],
            "cpu_ms_per_request": {k: x * 1000 for k, x in load["cpu_s_per_request"].items()},
            "workers": {k: w for k, w in (v.get("workers") or {}).items()
                        if k.rsplit("-", 1)[-1] == arch},
            "knee": load["breaking_point"].found,
            "tested_users": load["breaking_point"].max_users,
            "predicted_rps": model.predicted_rps,
            "binding": model.binding.name if model.binding else None,
            "model": model.to_dict(),
            "model_sentence": model.sentence(),
            "measured_over_predicted": ceiling.closeness(load["max_rps"], model.predicted_rps),
            "valid": load["valid"],
            **({"model_connections": load["model_connections"]}
               if load["model_connections"] else {}),
        })
    per_repeat = _capacities(run, manifest, guard.grace_s)
    capacity = per_repeat[0] if per_repeat else {}
    for r in rows:
        found = (capacity.get(r["variant"]) or {}).get(r["arch"])
        if found and r["arrival"] == "spread":  # keys only where a search ran
            shared = found["shared"]
            values = [((c.get(r["variant"]) or {}).get(r["arch"]) or {}).get("shared", {})
                      .get("capacity") for c in per_repeat]
            spread = summary_of(values) if len(per_repeat) > 1 else None
            rate = spread["median"] if spread else shared["capacity"]
            r.update(capacity_rps=rate, capacity_status=shared["status"],
                     first_overloaded_rps=shared["first_failing"],
                     capacity_p99_bound_ms=shared["p99_bound_ms"],
                     capacity_over_predicted=ceiling.closeness(rate, r["predicted_rps"]),
                     **_bounded(inputs[(r["variant"], r["arch"], r["arrival"])], r["arch"],
                                rate, shared["p99_bound_ms"], _step_cpu(
                                    sources, capacity_dir(locust_roots(run / "raw")[0][1],
                                                          r["variant"], r["arch"]), r["arch"],
                                    shared["steps"])),
                     **({"capacity_repeats": spread,
                         # per repeat, in order, None where a search found none
                         "capacity_per_repeat": [number(v) for v in values]}
                        if spread else {}))
    res = {"manifest": manifest, "analysis": analysis, "rows": rows, "probes": probes,
           "loads": loads, "variants": variants, "capacity": capacity}
    res["decomposition"] = decompose(res, probe_rt)
    res["headline"] = _headline(res)
    return res


def _model_connections(sources: dict, arch: str, start: float | None,
                       end: float | None) -> dict | None:
    """Which model worker held each scoring worker's connections during the load (sync
    only: a blocking model worker serves one pooled connection at a time); None for runs
    whose samples predate the connection records."""
    if arch != "sync" or not start or not end:
        return None
    for samples in sources.values():
        found = pinning.model_connections(samples, start, end, f"scoring-{arch}",
                                          f"model-{arch}")
        if found:
            return found
    return None


def _capacities(run: Path, manifest: dict, grace_s: float) -> list[dict[str, dict[str, dict]]]:
    """Per repeat, {variant: {arch: search}} re-derived from each rung's step folders (none
    recorded: [], as in runs from before the ladder searched capacities)."""
    proto = manifest.get("protocol") or {}
    if not proto.get("capacity"):
        return []
    params = CapacityParams(**proto["capacity"])
    rungs = {(v["name"], arch) for v in manifest.get("variants") or []
             for arch in v.get("archs") or []}
    repeats = []
    for _, root in locust_roots(run / "raw"):
        out: dict[str, dict[str, dict]] = {}
        for name, arch in sorted(rungs):
            found = analyse_search(capacity_dir(root, name, arch), params, grace_s)
            if found is not None:
                out.setdefault(name, {})[arch] = found
        repeats.append(out)
    return repeats


def _services(v: dict, arch: str, load: dict, probes: dict,
              topo: dict) -> tuple[list[ceiling.ServiceInput], dict, dict]:
    """The ceiling model's inputs for one rung, and its scoring and model envs."""
    workers = v.get("workers") or {}
    services = []
    envs = {}
    scoring_env = ((workers.get(f"scoring-{arch}") or {}).get("env")
                   or v.get("scoring_handler_env") or {})
    for role, name in (("scoring", f"scoring-{arch}"), ("model", f"model-{arch}")):
        w = workers.get(name) or {}
        cpus = tuple(w.get("cpus") or (topo.get("services", {}).get(name) or {}).get("cpus") or ())
        env = w.get("env") or v.get(f"{'model_api' if role == 'model' else 'scoring_handler'}_env")
        envs[role] = env or {}
        n_workers = w.get("workers") or ceiling.workers_in_effect(arch, len(cpus), None)
        slots = ceiling.service_slots(role, arch, n_workers, env or {})
        hold = (probes.get((v.get("name"), role, arch)) or {}).get("mean_ms")
        services.append(ceiling.ServiceInput(
            name, cpus, slots,
            hold / 1000 if hold and not math.isnan(hold) else None,
            ceiling.model_calls(scoring_env) if role == "model" else 1,
            load["cpu_s_per_request"].get(name), processes=n_workers))
    redis_cpus = tuple((topo.get("services", {}).get("redis") or {}).get("cpus") or ())
    # Redis executes commands on one thread: one core at most, whatever its CPU set
    services.append(ceiling.ServiceInput("redis", redis_cpus, None, None, 1,
                                         load["cpu_s_per_request"].get("redis"), processes=1))
    return services, envs["scoring"], envs["model"]


def _bounded(inputs: tuple, arch: str, rate: float | None, bound_ms: float | None,
             cpu_by_rate: list) -> dict:
    """The queueing model's bounded capacity (experiments/analysis/queueing.py) beside the
    ceiling, from the same inputs (CPU per request at each rate from the search's steps,
    where they have it), and the measured capacity over it."""
    pred = queueing.predict_rung(inputs[0], arch, inputs[1], inputs[2], bound_ms, cpu_by_rate)
    if pred is None:
        return {}
    return {"bounded_predicted_rps": pred.capacity_rps, "bounded_prediction": pred.to_dict(),
            "capacity_over_bounded": ceiling.closeness(rate, pred.capacity_rps)}


def _step_cpu(sources: dict, arch_dir: Path, arch: str,
              steps: list[dict]) -> list[tuple[float, dict]]:
    """(achieved rate, {service: CPU s per request}) per passed step of one capacity search:
    each service's CPU over the step's whole Locust run (idle before and after the schedule)
    over the requests it sent. Only passed steps: in an overloaded one the cores ran flat out,
    so CPU / requests is their cap, not what a request costs. [] without resource samples."""
    passed = {(round(s["rate"], 6), bool(s.get("hold"))) for s in steps
              if s.get("outcome") == "pass"}
    out = []
    for d in step_dirs(arch_dir) if sources else []:
        r = json.loads((d / "result.json").read_text())
        om = r.get("open_model") or {}
        if (not om.get("sent") or not r.get("started_at") or not r.get("ended_at")
                or (round(om.get("rate", 0), 6), d.name.endswith("_hold")) not in passed):
            continue
        use = resource_usage(sources, r["started_at"], r["ended_at"])
        out.append((om.get("achieved_rate") or om["rate"],
                    {_svc(k): u["cpu_total_s"] / om["sent"] for k, u in use.items()
                     if _svc(k) in {f"scoring-{arch}", f"model-{arch}", "redis"}}))
    return out


def _row(res: dict, variant: str, arch: str, arrival: str = "spread") -> dict | None:
    for r in res["rows"]:
        if (r["variant"], r["arch"], r["arrival"]) == (variant, arch, arrival):
            return r
    return None



def decompose(res: dict, probe_rt: dict) -> dict[str, Any]:
    """The four answers of the issue, as numbers (None where a variant did not run)."""
    out: dict[str, Any] = {}
    d_sync, d_async = _row(res, "default", "sync"), _row(res, "default", "async")
    seq = _row(res, "async-sequential", "async")
    if d_sync and d_async:
        ls, la = number(d_sync["p50_1_user_ms"]), number(d_async["p50_1_user_ms"])
        lat: dict[str, Any] = {"sync_ms": ls, "async_ms": la,
                               "gap_ms": ls - la if ls is not None and la is not None else None}
        if seq:
            lq = number(seq["p50_1_user_ms"])
            lat["async_sequential_ms"] = lq
            if lq is not None and la is not None:
                lat["concurrency_ms"] = lq - la
                if lat["gap_ms"]:
                    lat["concurrency_share"] = (lq - la) / lat["gap_ms"]
                    lat["rest_ms"] = ls - lq
            a = probe_rt.get(("default", "scoring", "async"))
            b = probe_rt.get(("async-sequential", "scoring", "async"))
            if a is not None and b is not None:
                lat["concurrency_test"] = compare(a, b, test="mannwhitney",
                                                  label_a="async", label_b="async-sequential"
                                                  ).to_dict()
        a = probe_rt.get(("default", "scoring", "sync"))
        b = probe_rt.get(("default", "scoring", "async"))
        if a is not None and b is not None:
            lat["gap_test"] = compare(a, b, test="mannwhitney").to_dict()
        out["latency"] = lat
        ms, ma = number(d_sync["max_rps"]), number(d_async["max_rps"])
        sync_stages = {s["kind"]: s for s in d_sync["model"]["stages"]}
        sync_workers = [s for s in d_sync["model"]["stages"] if s["kind"] == "workers"]
        thr: dict[str, Any] = {
            "sync_max_rps": ms, "async_max_rps": ma,
            "gap_rps": ma - ms if ma is not None and ms is not None else None,
            "sync_binding": d_sync["binding"], "async_binding": d_async["binding"],
            "sync_predicted_rps": d_sync["predicted_rps"],
            "async_predicted_rps": d_async["predicted_rps"],
            "sync_worker_ceiling_rps": min((s["capacity_rps"] for s in sync_workers),
                                           default=None),
            "sync_cpu_ceiling_rps": (sync_stages.get("cpu") or {}).get("capacity_rps"),
            "async_cpu_ceiling_rps": next((s["capacity_rps"] for s in d_async["model"]["stages"]
                                           if s["kind"] == "cpu"), None),
        }
        if thr["gap_rps"] is not None and thr["sync_cpu_ceiling_rps"] is not None:
            # What the sync stack would gain if its workers did not block (CPU-bound like the
            # event loop), capped by the gap; the rest is the two stacks' CPU cost per request.
            blocked = max(0.0, min(thr["gap_rps"], thr["sync_cpu_ceiling_rps"] - ms))
            thr["blocking_workers_rps"] = blocked
            thr["cpu_cost_rps"] = thr["gap_rps"] - blocked
        best = max((r for r in res["rows"] if r["arch"] == "sync" and r["variant"] != "original"),
                   key=lambda r: r["max_rps"] or 0, default=None)
        if best:
            thr["best_sync"] = {"variant": best["variant"], "arrival": best["arrival"],
                                "max_rps": best["max_rps"]}
        out["throughput"] = thr
    orig = {}
    for arch in ("sync", "async"):
        o, d = _row(res, "original", arch), _row(res, "default", arch)
        if o and d:
            orig[arch] = {
                "p50_1_user_ms": (o["p50_1_user_ms"], d["p50_1_user_ms"]),
                "max_rps": (o["max_rps"], d["max_rps"]),
                "scoring_cpu_ms_per_request": (o["cpu_ms_per_request"].get(f"scoring-{arch}"),
                                               d["cpu_ms_per_request"].get(f"scoring-{arch}")),
            }
    out["original"] = orig
    return out


HEADLINE_VARIANTS = ("original", "default")  # the index line; report.json has every row


def _headline(res: dict) -> dict[str, Any]:
    head: dict[str, Any] = {}
    for r in res["rows"]:
        if r["variant"] not in HEADLINE_VARIANTS:
            continue
        key = f"{r['variant']}/{r['arch']}"
        key += "" if r["arrival"] == "spread" else f"/{r['arrival']}"
        head[key] = {"max_rps": round(r["max_rps"], 1) if r["max_rps"] is not None else None,
                     "predicted_rps": (round(r["predicted_rps"], 1)
                                       if r["predicted_rps"] is not None else None),
                     "p50_ms_1_user": (round(r["p50_1_user_ms"], 1)
                                       if number(r["p50_1_user_ms"]) is not None else None)}
    capacity = {f"{r['variant']}/{r['arch']}": _round1(r["capacity_rps"])
                for r in res["rows"] if "capacity_rps" in r}
    if capacity:  # every rung's, at the shared bound
        head["capacity_rps"] = capacity
    return head


def _round1(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def headline(res: dict) -> dict[str, Any]:
    """max req/s, predicted req/s and the 1-user median of the original and default builds."""
    return res["headline"]


# ---------------------------------------------------------------------------------- plot


def _plot_ladder(run: Path, rows: list[dict]) -> str | None:
    if not rows:
        return None
    labels = [f"{r['variant']}\n{r['arch']}" + ("" if r["arrival"] == "spread"
                                                 else f" {r['arrival']}") for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(rows) + 2), 4.8))
    measured = [r["max_rps"] or 0 for r in rows]
    predicted = [r["predicted_rps"] or 0 for r in rows]
    ax.bar(x - 0.2, measured, 0.4, label="measured max req/s")
    ax.bar(x + 0.2, predicted, 0.4, label="predicted ceiling", alpha=0.6)
    for i, r in enumerate(rows):
        if r["binding"]:
            ax.text(x[i] + 0.2, predicted[i], r["binding"].split(":")[0], ha="center",
                    va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=7, rotation=45, ha="right")
    ax.set_ylabel("requests/s")
    ax.set_title("The ladder: measured max requests/s and the model's ceiling per variant")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run / "plot_ladder.png", dpi=90)
    plt.close(fig)
    return "plot_ladder.png"


# ------------------------------------------------------------------------------ markdown



def _bound(row: dict | None) -> str:
    if row is None or row["knee"]:
        return ""
    return f" (no knee up to {row['tested_users']} users: a lower bound)"


def _decomposition_lines(res: dict) -> list[str]:
    dec = res["decomposition"]
    lines = ["## Where the delta comes from", ""]
    lat = dec.get("latency")
    if lat:
        s = (f"- **Low-load latency** (median at 1 user): sync {fmt(lat['sync_ms'])} ms, async "
             f"{fmt(lat['async_ms'])} ms, a gap of {fmt(lat['gap_ms'])} ms")
        if lat.get("gap_test"):
            s += f" ({lat['gap_test']['verdict']})"
        if "async_sequential_ms" in lat:
            s += (f". Awaiting the two model calls one after the other makes async "
                  f"{fmt(lat['async_sequential_ms'])} ms: running them concurrently saves "
                  f"{fmt(lat.get('concurrency_ms'))} ms, {pct(lat.get('concurrency_share'))} "
                  f"of the gap; the remaining {fmt(lat.get('rest_ms'))} ms is the rest of the "
                  "path (framework, clients, server)")
            if lat.get("concurrency_test"):
                s += f" (sequential vs concurrent: {lat['concurrency_test']['verdict']})"
        lines.append(s + ".")
    thr = dec.get("throughput")
    d_sync, d_async = _row(res, "default", "sync"), _row(res, "default", "async")
    if thr:
        s = (f"- **Throughput** (max req/s of the step load): sync {fmt(thr['sync_max_rps'])}"
             f"{_bound(d_sync)}, async {fmt(thr['async_max_rps'])}{_bound(d_async)}, a gap of "
             f"{fmt(thr['gap_rps'])} req/s. The model "
             f"says sync is bound by `{thr['sync_binding']}` (predicted "
             f"{fmt(thr['sync_predicted_rps'])}) and async by `{thr['async_binding']}` "
             f"(predicted {fmt(thr['async_predicted_rps'])}).")
        if thr.get("blocking_workers_rps") is not None:
            s += (f" Were its workers not blocking, the sync stack's own CPU cost would let it "
                  f"reach {fmt(thr['sync_cpu_ceiling_rps'])} req/s: blocking workers account for "
                  f"{fmt(thr['blocking_workers_rps'])} req/s of the gap, the CPU cost per request "
                  f"of the two stacks (event loop vs sync server) for "
                  f"{fmt(thr['cpu_cost_rps'])} req/s.")
        if thr.get("best_sync"):
            b = thr["best_sync"]
            s += (f" The best sync variant measured is `{b['variant']}` ({b['arrival']}) at "
                  f"{fmt(b['max_rps'])} req/s.")
        lines.append(s)
    for arch, o in (dec.get("original") or {}).items():
        (lo, ld), (mo, md), (co, cd) = (o["p50_1_user_ms"], o["max_rps"],
                                        o["scoring_cpu_ms_per_request"])
        redis = " and blocking Redis call" if arch == "async" else ""
        lines.append(
            f"- **The original's per-request clients{redis} ({arch})**: 1-user median "
            f"{fmt(lo)} ms vs {fmt(ld)} ms pooled; max "
            f"{fmt(mo)} vs {fmt(md)} req/s; scoring handler CPU {fmt(co, 2)} vs {fmt(cd, 2)} ms "
            "per request.")
    close = [r for r in res["rows"] if r["measured_over_predicted"] is not None]
    if close:
        lines.append("- **Measured vs predicted ceiling**: " + "; ".join(
            f"{r['variant']}/{r['arch']}{'' if r['arrival'] == 'spread' else '/' + r['arrival']} "
            f"{r['measured_over_predicted']:.0%}{'' if r['knee'] else ' (no knee: at least)'}"
            for r in close) + ".")
        if not all(r["knee"] for r in close):
            lines.append("- Where the step load found no knee, its max req/s is the load it "
                         "offered, not the variant's ceiling: the ramp stopped below it.")
    return lines + [""]


def capacity_lines(res: dict) -> list[str]:
    """Each rung's capacity at the shared bound beside its predicted ceiling, then the steps."""
    rows = [r for r in res["rows"] if "capacity_rps" in r]
    if not rows:
        return []
    bound = rows[0]["capacity_p99_bound_ms"]
    status = {"found": "found", "above_range": "every rate passed (max_rate too low)",
              "below_range": "even the minimum rate failed",
              "invalid": "**invalid: a step could not be judged (reason in the steps table)**",
              "unfinished": "step budget ran out"}
    lines = ["## Capacity per rung", "",
             f"Each rung's capacity: the highest open-model arrival rate whose p99 response "
             f"time (from each request's scheduled send) is <= {bound:g} ms with few errors, "
             "searched by growing then bisecting the rate; recomputed here from the step "
             "folders. Unlike the step load's max req/s it is not capped by the ramp's users, so "
             "it is the measurement to hold against the predicted ceiling.", "",
             "The predicted bounded capacity is the queueing model's (experiments/analysis/"
             "queueing.py): a simulation of the rung's slots, model calls and shared cores, from "
             "the same measurements as the ceiling, searched for the highest Poisson rate whose "
             "p99 stays within the bound.", "",
             "| variant | arch | capacity req/s | status | first overloaded req/s | predicted "
             "req/s | capacity/predicted | predicted bounded req/s | capacity/bounded | step "
             "load max req/s |", "|---" * 10 + "|"]
    several = any("capacity_repeats" in r for r in rows)
    if several:
        lines[-2:-2] = ["With repeats, the capacity is the median over the repeats, followed by "
                        "each repeat's value and the coefficient of variation (**unstable** "
                        "over 10 %); status, first overloaded rate and the steps below are "
                        "repeat 1's, as are the step loads.", ""]
    for r in rows:
        cap = fmt(r["capacity_rps"])
        if "capacity_repeats" in r:
            s = r["capacity_repeats"]
            cv = f", CV {s['cv']:.0%}" if s.get("cv") is not None else ""
            cap += (f" ({'/'.join(fmt(x) for x in s['values'])}{cv}"
                    f"{' **unstable**' if s.get('unstable') else ''})")
        lines.append(f"| {r['variant']} | {r['arch']} | {cap} | "
                     f"{status.get(r['capacity_status'], r['capacity_status'])} | "
                     f"{fmt(r['first_overloaded_rps'])} | {fmt(r['predicted_rps'])} | "
                     f"{pct(r['capacity_over_predicted'])} | "
                     f"{fmt(r.get('bounded_predicted_rps'))} | "
                     f"{pct(r.get('capacity_over_bounded'))} | {fmt(r['max_rps'])} |")
    steps = {f"{v}/{a}": e for v, by_arch in res["capacity"].items() for a, e in by_arch.items()}
    detail = capacity_section(steps)
    return [*lines, "", "### Capacity search steps", "", *detail[2:]]


def surprises(res: dict) -> list[str]:
    out = []
    d, cpr = _row(res, "default", "sync"), _row(res, "sync-client-per-request", "sync")
    if d and cpr and (cpr["max_rps"] or 0) > (d["max_rps"] or 0) * 1.05:
        out.append(f"A new connection per call beats pooled keep-alive on the sync stack: "
                   f"{fmt(cpr['max_rps'])} vs {fmt(d['max_rps'])} req/s (a kept-alive connection "
                   "stays with one busy blocking model worker).")
    for r in res["rows"]:
        ratio = r["measured_over_predicted"]
        tested_to = (res["loads"][(r["variant"], r["arch"], r["arrival"])]
                     ["breaking_point"].max_users)
        if ratio is not None and ratio > 1.15:
            out.append(f"{r['variant']}/{r['arch']}/{r['arrival']} exceeds its predicted ceiling "
                       f"({fmt(r['max_rps'])} vs {fmt(r['predicted_rps'])} req/s): the model "
                       "overestimates a hold time or a CPU cost.")
        elif ratio is not None and ratio < 0.7 and tested_to > (r["predicted_rps"] or 0):
            out.append(f"{r['variant']}/{r['arch']}/{r['arrival']} stays at {ratio:.0%} of its "
                       f"predicted ceiling ({fmt(r['max_rps'])} vs {fmt(r['predicted_rps'])} "
                       f"req/s, bound by {r['binding']}): something the model does not see "
                       "(queueing, uneven load across workers, contention) holds it back.")
    for r in res["rows"]:
        if r["arrival"] == "bursty":
            spread = _row(res, r["variant"], r["arch"], "spread") or _row(
                res, "default", r["arch"], "spread")
            if spread and r["low_load_p50_ms"] and spread["low_load_p50_ms"]:
                out.append(f"{r['variant']}/{r['arch']} bursty: median at <= {LOW_LOAD_USERS} "
                           f"users {fmt(r['low_load_p50_ms'])} ms against "
                           f"{fmt(spread['low_load_p50_ms'])} ms with spread arrivals "
                           f"({spread['variant']}).")
    return out


def render(res: dict, run: Path, plot: str | None) -> str:
    lines = header_lines(res["manifest"], run)
    lines += ["## The ladder", "",
              "Each variant changes one factor of the default build through its settings; the "
              "lab was redeployed with it, verified, probed at 1 user, then given the step "
              "load. The default build was redeployed at the end.", "",
              "| variant | what changes | deploy vars |", "|---|---|---|"]
    for v in res["variants"].values():
        lines.append(f"| {v['name']} | {v.get('description', '')} | "
                     f"`{json.dumps(v.get('deploy_vars') or {})}` |")
    failed = [v for v in res["variants"].values() if v.get("failed")]
    if failed:
        lines += ["", "Variants that could not be measured (a finding of this run; the deploy "
                  "log under raw/deploy/ and the service logs say why):", ""]
        lines += [f"- **{v['name']}**: {v['failed']}" for v in failed]
    lines += ["", *_decomposition_lines(res)]
    notes = surprises(res)
    if notes:
        lines += ["## Surprises", "", *(f"- {s}" for s in notes), ""]
    lines += capacity_lines(res)
    lines += ["## Measured and predicted", "",
              "| variant | arch | arrival | p50 1 user ms | model API hold ms | p50 <= "
              f"{LOW_LOAD_USERS} users ms | breaking point users | max req/s | predicted req/s "
              "| binding stage | measured/predicted | CPU ms/request | workers |",
              "|---" * 13 + "|"]
    for r in res["rows"]:
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["cpu_ms_per_request"].items()))
        workers = ", ".join(
            f"{k} {w.get('workers')}" + (f"x{w['threads']}" if w.get("threads") else "")
            + (f" {w['worker_class']}" if w.get("worker_class") else "")
            for k, w in r["workers"].items())
        ratio = r["measured_over_predicted"]
        lines.append(
            f"| {r['variant']} | {r['arch']} | {r['arrival']} | {fmt(r['p50_1_user_ms'])} | "
            f"{fmt(r['model_hold_ms'])} | {fmt(r['low_load_p50_ms'])} | "
            f"{r['breaking_point_users'] or 'none <= ' + str(r['tested_users'])} | "
            f"{fmt(r['max_rps'])} | {fmt(r['predicted_rps'])} | {r['binding'] or 'n/a'} | "
            f"{pct(ratio)} | {cpu} | {workers} |" + ("" if r["valid"] else " **invalid**"))
    pinned = [r for r in res["rows"] if r.get("model_connections")]
    if pinned:
        lines += ["", "Keep-alive connections during the step load (from the resource "
                  "samples; experiments/analysis/pinning.py):", ""]
        lines += [f"- {r['variant']}/{r['arch']}/{r['arrival']}: "
                  f"{pinning.sentence(r['model_connections'])}" for r in pinned]
    lines += ["", "Model per row (the smallest stage binds):", ""]
    for r in res["rows"]:
        lines.append(f"- {r['variant']}/{r['arch']}/{r['arrival']}: {r['model_sentence']}; "
                     "stages: " + "; ".join(f"{s['name']} {s['capacity_rps']:.1f} "
                                            f"({s['formula']})" for s in r["model"]["stages"]))
    lines += [
        "", "### How the model is computed", "",
        "- Blocking stage (sync workers, or gthread threads): capacity = slots / (hold time x "
        "calls per request), Little's law at saturation. A scoring worker's hold time is the "
        "mean 1-user latency of that variant's scoring handler; a model API worker's is the "
        "mean 1-user latency of the model API probed directly, with 2 calls per scoring "
        "request. meinheld with the greenlet patch, and uvicorn, have no worker stage.",
        "- CPU stage: services whose CPU sets overlap share them: capacity = cores / the sum of "
        "their CPU seconds per request, measured over the variant's step load (CPU in the "
        "Locust run's window / requests of the run). This assumes the cores are the lab's "
        "alone; other work on the machine lowers the measured numbers, not the model's.",
        "- Measured max req/s is the best smoothed throughput of the step load; a ramp that "
        "never reaches a stage's capacity cannot show it.",
        "", rule_sentence(res["analysis"].breaking_point), ""]
    if plot:
        lines += [f"![ladder]({plot})", ""]
    lines += hardware_section(run)
    lines += footer_lines()
    return "\n".join(lines)


def write_report(folder: str | Path, res: dict[str, Any]) -> Report:
    run = Path(folder)
    plot = _plot_ladder(run, res["rows"])
    doc = {"rows": res["rows"], "decomposition": res["decomposition"],
           **({"capacity": res["capacity"]} if res["capacity"] else {}),
           "headline": res["headline"]}
    return write_files(run, render(res, run, plot), doc, [plot])
