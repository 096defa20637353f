"""Analysis of a ladder's result folder (experiments 4, 5 and 6), from the folder alone: per
rung the 1-user latency, breaking point, max requests/s and CPU per request per service (cut
from the resource samples with each run's stored window), the ceiling model's prediction
beside the measurement, and each rung's capacity re-derived from its search's steps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from experiments.analysis import ceiling, pinning, queueing
from experiments.analysis.breaking_point import detect_breaking_point
from experiments.analysis.capacity import analyse_search, step_dirs
from experiments.analysis.manifest import analysis_params, number
from experiments.analysis.repeat_figures import summary_of
from experiments.analysis.summary import (
    analyse_run_dir,
    load_resource_samples,
    resource_usage,
)
from experiments.constants import CAPACITY
from experiments.ladder import model_service_of
from experiments.protocol import CapacityParams
from experiments.repeats import locust_roots

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


def analyse_rungs(folder: str | Path) -> dict[str, Any]:
    """Every rung's numbers: {"rows", "probes", "loads", "variants", "capacity", "probe_rt"
    (the 1-user latencies per probe), "manifest", "analysis"}."""
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
        model = _model_service(variants.get(variant, {}), arch)
        if sources and n.started_at and n.ended_at and n.total_requests:
            for name, u in resource_usage(sources, n.started_at, n.ended_at).items():
                if _svc(name) in {f"scoring-{arch}", model, "redis", "loadgen"}:
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
                     capacity_budget=shared.get("budget"),
                     **_bounded(inputs[(r["variant"], r["arch"], r["arrival"])], r["arch"],
                                rate, shared["p99_bound_ms"], _step_cpu(
                                    sources, capacity_dir(locust_roots(run / "raw")[0][1],
                                                          r["variant"], r["arch"]), r["arch"],
                                    shared["steps"])),
                     **({"capacity_repeats": spread,
                         # per repeat, in order, None where a search found none
                         "capacity_per_repeat": [number(v) for v in values]}
                        if spread else {}))
    return {"manifest": manifest, "analysis": analysis, "rows": rows, "probes": probes,
            "loads": loads, "variants": variants, "capacity": capacity, "probe_rt": probe_rt,
            # every repeat's searches ({variant: {arch: search}} per repeat), for analyses
            # that pair the same repeat of two rungs (experiment 5's factor pairs)
            "capacity_by_repeat": per_repeat}


def _model_service(v: dict, arch: str) -> str:
    """The model server the rung's `arch` handler called, from its manifest entry."""
    return model_service_of(v.get("model_server") or "", v.get("archs") or (), arch)


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


def find_row(res: dict, variant: str, arch: str, arrival: str = "spread") -> dict | None:
    for r in res["rows"]:
        if (r["variant"], r["arch"], r["arrival"]) == (variant, arch, arrival):
            return r
    return None


def capacity_dir(root: Path, variant: str, arch: str) -> Path:
    """Where one rung's capacity search keeps its steps under a repeat's Locust folder
    (experiments.repeats.locust_root; the report reads them back)."""
    return root / variant / CAPACITY / arch

