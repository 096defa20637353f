"""Report of experiment 4 (the delta decomposition), from the result folder alone: per variant
the 1-user latency, breaking point, max requests/s and CPU per request per service (cut from
the resource samples with each run's stored window), the ceiling model's prediction beside the
measurement, the decomposition sentences and the ladder plot. Rebuildable:

    python -m experiments report results/<run folder>
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from experiments.analysis import pinning
from experiments.analysis.breaking_point import rule_sentence
from experiments.analysis.ceiling import workers_label
from experiments.analysis.ladder import LOW_LOAD_USERS, analyse_rungs, find_row
from experiments.analysis.stats import compare
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


def analyse(folder: str | Path) -> dict[str, Any]:
    """Every number of the report: the rungs' (experiments.analysis.ladder), the
    decomposition and the headline."""
    res = analyse_rungs(folder)
    res["decomposition"] = decompose(res, res["probe_rt"])
    res["headline"] = _headline(res)
    return res



def decompose(res: dict, probe_rt: dict) -> dict[str, Any]:
    """The four answers of the issue, as numbers (None where a variant did not run)."""
    out: dict[str, Any] = {}
    d_sync, d_async = find_row(res, "default", "sync"), find_row(res, "default", "async")
    seq = find_row(res, "async-sequential", "async")
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
        o, d = find_row(res, "original", arch), find_row(res, "default", arch)
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
    capacity = {f"{r['variant']}/{r['arch']}": headline_capacity(number(r["capacity_rps"]),
                                                                 r.get("capacity_status"))
                for r in res["rows"] if "capacity_rps" in r}
    if capacity:  # every rung's, at the shared bound
        head["capacity_rps"] = capacity
    return head


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
    d_sync, d_async = find_row(res, "default", "sync"), find_row(res, "default", "async")
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


def surprises(res: dict) -> list[str]:
    out = []
    d, cpr = find_row(res, "default", "sync"), find_row(res, "sync-client-per-request", "sync")
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
            spread = find_row(res, r["variant"], r["arch"], "spread") or find_row(
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
        workers = ", ".join(workers_label(k, w) for k, w in r["workers"].items())
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
