"""Experiment 3's report: report.md, report.json and PNG plots of a result folder, from the
folder alone (manifest.json, raw/locust/<scenario>/<arch>/ CSVs, raw/resources/<host>.csv,
raw/hardware/<host>/). Rebuildable at any time:

    python -m experiments report results/<run folder>
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.analysis.breaking_point import (
    BreakingPoint,
    detect_breaking_point,
    rule_sentence,
)
from experiments.analysis.capacity import analyse_capacity
from experiments.analysis.repeat_figures import (
    compare_repeats,
    repeat_section,
    summarise_headlines,
)
from experiments.analysis.stats import compare
from experiments.analysis.summary import (
    RunData,
    analyse_run_dir,
    cpu_series,
    load_resource_samples,
    resource_usage,
)
from experiments.constants import DEFAULT_BUILDS
from experiments.plots import plt
from experiments.protocol import GuardParams
from experiments.repeats import locust_roots
from experiments.reporting import (
    Report,
    analysis_params,
    capacity_headline,
    capacity_section,
    fmt,
    footer_lines,
    hardware_section,
    header_lines,
    write_files,
)

LOAD_TEST = "load_test"
RESPONSE_TIME = "response_time"
MAX_PERFORMANCE = "max_performance"


def _layout(base: Path, manifest: dict) -> tuple[list[str], list[str]]:
    """(scenarios in protocol order, architectures with sync first) found under one repeat's
    Locust folder (raw/locust or raw/repeat-<k>/locust)."""
    found = (
        {
            d.name: sorted(a.name for a in d.iterdir() if a.is_dir())
            for d in sorted(base.iterdir())
            if d.is_dir()
        }
        if base.exists()
        else {}
    )
    order = [s["name"] for s in (manifest.get("protocol") or {}).get("scenarios", [])]
    scenarios = [s for s in order if s in found] + sorted(s for s in found if s not in order)
    archs = sorted(
        {a for v in found.values() for a in v}, key=lambda a: (a != "sync", a != "async", a)
    )
    return scenarios, archs


def _repeat_manifest(manifest: dict, k: int) -> dict:
    """The manifest as one repeat saw it: its scenario entries (an entry without a repeat is
    repeat 1's: a run before repeats), its recorded breaking points and capacities."""
    record = next((r for r in manifest.get("repeats") or [] if isinstance(r, dict)
                   and r.get("repeat") == k), {})
    view = {**manifest,
            "scenarios": [e for e in manifest.get("scenarios") or []
                          if e.get("repeat", 1) == k]}
    if record or k > 1:
        view["breaking_points"] = record.get("breaking_points") or {}
        view["capacity"] = record.get("capacity") or {}
    return view


def analyse(run_path: str | Path) -> dict[str, Any]:
    """Every number the report shows, computed from the folder: each repeat on its own
    (raw/repeat-<k>/locust, or raw/locust for a run of one), then the headline figures over
    the repeats and the sync/async comparison at the repeat level."""
    run = Path(run_path)
    manifest = json.loads((run / "manifest.json").read_text())
    analysis, guard = analysis_params(manifest)
    sources = load_resource_samples(run / "raw" / "resources")
    repeats = [_analyse_repeat(run, _repeat_manifest(manifest, k), k, base, analysis, guard,
                               sources)
               for k, base in locust_roots(run / "raw")]
    archs = sorted({a for r in repeats for a in r["archs"]},
                   key=lambda a: (a != "sync", a != "async", a))
    out: dict[str, Any] = {"manifest": manifest, "analysis": analysis, "guard": guard,
                           "archs": archs, "resource_sources": sources, "repeats": repeats}
    # the builds first: a headline's sync and async are the default builds, not the best
    out["headline"] = {"builds": DEFAULT_BUILDS,
                       **summarise_headlines([r["headline"] for r in repeats])}
    out["repeat_comparisons"] = compare_repeats([r["headline"] for r in repeats], archs,
                                                builds=DEFAULT_BUILDS)
    return out


def _analyse_repeat(run: Path, manifest: dict, k: int, base: Path, analysis, guard,
                    sources) -> dict[str, Any]:
    scenarios, archs = _layout(base, manifest)
    data: dict[str, dict[str, RunData]] = {}
    for s in scenarios:
        for a in archs:
            d = base / s / a
            if (d / "scenario.json").exists() or any(d.glob("requests_*.csv")):
                data.setdefault(s, {})[a] = analyse_run_dir(
                    d,
                    warmup_s=analysis.warmup_s,
                    lag_s=analysis.breaking_point.lag_s,
                    scenario=s,
                    arch=a,
                )
    out: dict[str, Any] = {
        "repeat": k,
        "manifest": manifest,
        "analysis": analysis,
        "guard": guard,
        "scenarios": scenarios,
        "archs": archs,
        "data": data,
        "comparisons": {},
        "breaking_points": {},
        "resources": {},
    }
    a_lab, b_lab = (archs + [None, None])[:2]
    for s, per_arch in data.items():
        if a_lab in per_arch and b_lab in per_arch:
            A, B = per_arch[a_lab], per_arch[b_lab]
            common = {"alpha": analysis.alpha, "min_effect": analysis.min_effect,
                      "label_a": a_lab, "label_b": b_lab}
            out["comparisons"][s] = {
                "rps": compare(A.window_rps, B.window_rps, test="welch", **common),
                "latency": compare(A.window_rt_ms, B.window_rt_ms, test="mannwhitney", **common),
            }
    for a, rd in data.get(LOAD_TEST, {}).items():
        out["breaking_points"][a] = detect_breaking_point(rd.series, analysis.breaking_point)
    for s, per_arch in data.items():
        for a, rd in per_arch.items():
            n = rd.numbers
            if sources and n.started_at and n.ended_at:
                usage = resource_usage(sources, n.started_at, n.ended_at)
                out["resources"].setdefault(s, {})[a] = {
                    svc: {
                        **u,
                        "cpu_s_per_request": (
                            u["cpu_total_s"] / n.total_requests if n.total_requests else None
                        ),
                    }
                    for svc, u in usage.items()
                }
    out["capacity"] = analyse_capacity(base, manifest.get("protocol") or {}, guard.grace_s)
    out["headline"] = _headline(out)
    return out


def _serves(service: str, arch: str) -> bool:
    """Whether a (possibly host-prefixed) service label belongs to arch's request path."""
    name = service.rsplit("/", 1)[-1]
    return name.endswith(f"-{arch}") or name in {"redis", "loadgen"}


def _headline(res: dict[str, Any]) -> dict[str, Any]:
    head: dict[str, Any] = {}
    data = res["data"]
    for a in res["archs"]:
        h: dict[str, Any] = {}
        bp: BreakingPoint | None = res["breaking_points"].get(a)
        if bp is not None:
            if bp.found:
                h["breaking_point_users"] = bp.users
            else:
                h["breaking_point_users"] = f"none <= {bp.max_users}" if bp.max_users else "no data"
            h["max_rps"] = round(bp.max_achieved_rps, 1)
        h.update(capacity_headline(res["capacity"].get(a)))
        if MAX_PERFORMANCE in data and a in data[MAX_PERFORMANCE]:
            h["max_performance_rps"] = round(data[MAX_PERFORMANCE][a].numbers.rps, 1)
        if RESPONSE_TIME in data and a in data[RESPONSE_TIME]:
            h["p50_ms_1_user"] = round(data[RESPONSE_TIME][a].numbers.p50_ms, 1)
            h["p99_ms_1_user"] = round(data[RESPONSE_TIME][a].numbers.p99_ms, 1)
        for s in (MAX_PERFORMANCE, LOAD_TEST):
            usage = res["resources"].get(s, {}).get(a)
            if usage:
                # This architecture's services (and what both share), not the other stack
                # idling in the same window.
                h["cpu_ms_per_request"] = {
                    svc: round(u["cpu_s_per_request"] * 1000, 2)
                    for svc, u in usage.items()
                    if u.get("cpu_s_per_request") and u["cpu_total_s"] > 0.01
                    and _serves(svc, a)
                }
                # the stack's own services (model API + scoring handler): one figure that
                # both architectures have, for the comparison across repeats
                own = [v for svc, v in h["cpu_ms_per_request"].items()
                       if svc.rsplit("/", 1)[-1].endswith(f"-{a}")]
                if own:
                    h["cpu_ms_per_request_stack"] = round(sum(own), 2)
                break
        h["valid"] = all(
            rd.numbers.valid for per in data.values() for x, rd in per.items() if x == a
        )
        head[a] = h
    return head


# --------------------------------------------------------------------------- plots


def _plot_scenario(run: Path, s: str, per_arch: dict[str, RunData], suffix: str = "") -> str:
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for a, rd in per_arch.items():
        ser = rd.series
        (line,) = ax1.plot(ser.t, ser.achieved_rps, label=f"{a} achieved")
        if ser.offered_rps.any():
            ax1.plot(
                ser.t,
                ser.offered_rps,
                "--",
                color=line.get_color(),
                alpha=0.5,
                label=f"{a} offered",
            )
        ax2.plot(ser.t, ser.p95_ms, label=f"{a} p95", color=line.get_color())
    ax1.set_ylabel("requests/s (successful)")
    ax2.set_ylabel("p95 latency (ms)")
    ax2.set_xlabel("seconds since the first request")
    ax1.set_title(f"{s}: throughput and p95 latency per second")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    name = f"plot_{s}{suffix}.png"
    fig.savefig(run / name, dpi=90)
    plt.close(fig)
    return name


def _plot_cpu(run: Path, res: dict[str, Any]) -> str | None:
    series = cpu_series(res["resource_sources"])
    if not series:
        return None
    t_start = min(t[0] for t, _ in series.values())
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for svc, (t, pct) in series.items():
        ax.plot(t - t_start, pct, label=svc, lw=1)
    windows = [(s, a, rd) for r in res["repeats"] for s, per_arch in r["data"].items()
               for a, rd in per_arch.items()]
    for s, a, rd in windows:
        n = rd.numbers
        if n.started_at and n.ended_at:
            ax.axvspan(
                n.started_at - t_start,
                n.ended_at - t_start,
                alpha=0.08,
                color="tab:blue" if a == res["archs"][0] else "tab:orange",
            )
            ax.text(
                n.started_at - t_start,
                ax.get_ylim()[1] * 0.95,
                f"{s}/{a}",
                fontsize=6,
                rotation=90,
                va="top",
            )
    ax.set_xlabel("seconds since the first resource sample")
    ax.set_ylabel("CPU % (100 = one core)")
    ax.set_title("CPU per service (shaded: scenario windows, blue = first architecture)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(run / "plot_cpu.png", dpi=90)
    plt.close(fig)
    return "plot_cpu.png"


# -------------------------------------------------------------------------- markdown


def _scenario_section(res: dict[str, Any], s: str, plot: str) -> list[str]:
    per_arch = res["data"][s]
    archs = [a for a in res["archs"] if a in per_arch]
    cmp_ = res["comparisons"].get(s)
    head = (
        "| | "
        + " | ".join(archs)
        + (" | ratio " + f"{archs[1]}/{archs[0]} | significance |" if cmp_ else " |")
    )
    sep = "|---" * (len(archs) + 1 + (2 if cmp_ else 0)) + "|"
    N = {a: per_arch[a].numbers for a in archs}
    sdoc = next(
        (
            x
            for x in (res["manifest"].get("protocol") or {}).get("scenarios", [])
            if x.get("name") == s
        ),
        None,
    )
    lines = [f"## Scenario: {s}", ""]
    if sdoc:
        if sdoc.get("users_from"):
            held = {
                e["arch"]: e.get("breaking_point_users")
                for e in res["manifest"].get("scenarios", [])
                if e.get("name") == s
            }
            users = f"the {sdoc['users_from'].replace('_', ' ')} (" + ", ".join(
                f"{a}: {held.get(a)}" for a in archs) + ")"
        elif sdoc.get("kind") == "ramp":
            users = f"{sdoc.get('start_users')}->{sdoc.get('end_users')}"
        else:
            users = sdoc.get("users")
        if sdoc.get("kind") == "open":
            held = {e["arch"]: e.get("capacity_rps") for e in res["manifest"].get("scenarios", [])
                    if e.get("name") == s}
            rate = (f"the capacity found ({', '.join(f'{a}: {fmt(held.get(a), 1)}' for a in archs)}"
                    " req/s)" if sdoc.get("rate_from") else f"{sdoc.get('rate')} req/s")
            lines.append(f"Planned: open model (requests at scheduled times, whatever is in "
                         f"flight), rate {rate}, {sdoc.get('total_s')} s. Latencies are response "
                         "times from each request's scheduled send; service times (from the "
                         "actual send) are in their own rows.")
        else:
            lines.append(
                f"Planned: {sdoc.get('kind')} (closed loop), users {users}, pacing "
                f"{sdoc.get('pacing_s')} s, {sdoc.get('total_s')} s."
            )
    users_run = ", ".join(f"{a}: {N[a].max_users}" for a in archs)
    lines += [
        f"Users reached: {users_run}. Measured window: after {res['analysis'].warmup_s:g} s "
        f"of warm-up ({', '.join(f'{a}: {N[a].seconds} s' for a in archs)}).",
        "",
        head,
        sep,
    ]

    def row(label, key, digits, cmp_key=None):
        cells = [fmt(getattr(N[a], key), digits) for a in archs]
        extra = ""
        if cmp_:
            c = cmp_[cmp_key] if cmp_key else None
            extra = f" | {fmt(c.ratio, 2)} | {c.verdict} |" if c else " | | |"
        return f"| {label} | " + " | ".join(cells) + (extra if cmp_ else " |")

    lines.append(row("requests/s", "rps", 2, "rps"))
    lines.append(
        "| requests/s 95 % CI | "
        + " | ".join(f"{fmt(N[a].rps_ci_low, 2)}-{fmt(N[a].rps_ci_high, 2)}" for a in archs)
        + (" | | |" if cmp_ else " |")
    )
    lines.append(row("p50 ms", "p50_ms", 1, "latency"))
    lines.append(row("p95 ms", "p95_ms", 1))
    lines.append(row("p99 ms", "p99_ms", 1))
    if any(N[a].open_model for a in archs):
        lines.append(row("service p50 ms", "service_p50_ms", 1))
        lines.append(row("service p99 ms", "service_p99_ms", 1))
    lines.append(row("requests (window)", "requests", 0))
    lines.append(row("failures (window)", "failures", 0))
    lines.append(row("requests (whole run)", "total_requests", 0))
    lines.append("")
    if cmp_:
        lines.append(
            f"Latency comparison: Mann-Whitney U on per-request times (ratio of medians); "
            f"requests/s: Welch's t on per-second counts (ratio of means); alpha "
            f"{res['analysis'].alpha:g}. Per-second counts are autocorrelated, so treat "
            "p-values as indicative."
        )
    for a in archs:
        if N[a].stability:
            lines.append(f"- {a} requests/s {N[a].stability}")
        if not N[a].valid:
            lines.append(f"- **{a}: invalid run ({'; '.join(N[a].reasons)})**")
    lines += ["", f"![{s}]({plot})", ""]
    return lines


def _breaking_section(res: dict[str, Any]) -> list[str]:
    bps: dict[str, BreakingPoint] = res["breaking_points"]
    lines = ["## Breaking points", "", rule_sentence(res["analysis"].breaking_point), ""]
    if not bps:
        return lines + ["No load test in this folder.", ""]
    lines += [
        "| | users | offered req/s | achieved req/s | p95 ms | at s | criterion | "
        "baseline p95 ms | max achieved req/s |",
        "|---" * 9 + "|",
    ]
    recorded = res["manifest"].get("breaking_points") or {}
    for a, bp in bps.items():
        if bp.found:
            lines.append(
                f"| {a} | {bp.users} | {fmt(bp.offered_rps, 0)} | {fmt(bp.achieved_rps, 1)} "
                f"| {fmt(bp.p95_ms, 1)} | {fmt(bp.t_s, 0)} | {bp.criterion} "
                f"(fired: {', '.join(f'{k} at {v:.0f} s' for k, v in bp.fired.items())}) "
                f"| {fmt(bp.baseline_p95_ms, 1)} | {fmt(bp.max_achieved_rps, 1)} |"
            )
        else:
            lines.append(
                f"| {a} | {bp.message} | | | | | | {fmt(bp.baseline_p95_ms, 1)} | "
                f"{fmt(bp.max_achieved_rps, 1)} |"
            )
    lines.append("")
    for a, rec in recorded.items():
        if a in bps and isinstance(rec, dict) and rec.get("users") != bps[a].users:
            lines.append(
                f"- Note: the run recorded {a}'s breaking point as {rec.get('users')} users "
                f"(used for max_performance); re-analysis gives {bps[a].users}."
            )
    return lines + [""]


def _resources_section(res: dict[str, Any], cpu_plot: str | None) -> list[str]:
    lines = ["## Resource usage", ""]
    if not res["resources"]:
        return lines + ["No resource samples in raw/resources/.", ""]
    lines += [
        "Window: each Locust run's start to end. CPU seconds per request divide a service's "
        "CPU in the window by the requests of the whole run.",
        "",
        "| scenario | run | service | CPU s | CPU ms/request | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for s in res["scenarios"]:
        for a, usage in res["resources"].get(s, {}).items():
            for svc, u in usage.items():
                per = u.get("cpu_s_per_request")
                rss = u.get("rss_peak_bytes")
                lines.append(
                    f"| {s} | {a} | {svc} | {fmt(u['cpu_total_s'], 2)} | "
                    f"{fmt(per * 1000 if per is not None else None, 3)} | "
                    f"{fmt(rss / 2**20 if rss else None, 1)} |"
                )
    lines.append("")
    if cpu_plot:
        lines += [f"![CPU per service]({cpu_plot})", ""]
    return lines


def _method_section(res: dict[str, Any]) -> list[str]:
    m = res["manifest"]
    g: GuardParams = res["guard"]
    arrival = m.get("arrival") or (m.get("protocol") or {}).get("arrival") or "?"
    arr = {
        "spread": "**spread**: each user waits a random offset in [0, pacing) before its first "
        "request and keeps that phase, so N users offer N requests/s spread over the "
        "second (Locust's constant_pacing alone keeps users started together in phase "
        "and turns N users into one burst of N requests per second).",
        "bursty": "**bursty** (the original's in-phase pattern): no offset, so users started "
        "together send together, one burst per second. Low-load latencies are "
        "inflated by the bursts.",
    }.get(arrival, arrival)
    peaks = [f"{rd.numbers.scenario}/{a}" for r in res["repeats"] for per in r["data"].values()
             for a, rd in per.items()]
    return [
        "## How the measurement traps were handled",
        "",
        f"- Arrival pattern: {arr}",
        f"- Load-generator CPU guard: Locust's own warning samples every 10 s and reads 0 first, "
        f"so it never fires in short runs. The runner samples the Locust processes' CPU itself "
        f"every {g.interval_s:g} s (psutil cpu_times deltas) and marks a run invalid when they use "
        f"more than {g.threshold:.0%} of their cores, or one Locust process more than "
        f"{g.threshold:.0%} of one core, for {g.sustain_s:g} s or more (after {g.grace_s:g} s of "
        f"start-up), or when Locust logs its own CPU warning. Runs checked: {len(peaks)}.",
        "- Latency percentiles come from every request's exact timing (the locustfile's "
        "per-request CSV), not from Locust's stats, which round to about two significant digits.",
        "",
    ]


def _invalid_parts(res: dict[str, Any]) -> list[str]:
    return [f"{rd.numbers.scenario}/{a}: {r}" for per_arch in res["data"].values()
            for a, rd in per_arch.items() for r in rd.numbers.reasons]


def _suffix(res: dict[str, Any], k: int) -> str:
    """Plot file suffix of repeat k: none in a run of one repeat (the names runs always had)."""
    return f"_r{k}" if len(res["repeats"]) > 1 else ""


def render(res: dict[str, Any], run: Path, plots: dict[tuple[int, str], str],
           cpu_plot: str | None) -> str:
    repeats = res["repeats"]
    several = len(repeats) > 1
    invalid = [f"repeat {r['repeat']}: {x}" if several else x
               for r in repeats for x in _invalid_parts(r)]
    lines = header_lines(res["manifest"], run, invalid)
    lines += repeat_section(res["manifest"], [r["headline"] for r in repeats],
                            res["headline"], res["repeat_comparisons"], res["archs"])
    lines += _method_section(res)
    for r in repeats:
        if several:
            order = next((x.get("order") for x in res["manifest"].get("repeats") or []
                          if isinstance(x, dict) and x.get("repeat") == r["repeat"]), None)
            lines += [f"## Repeat {r['repeat']}" + (f" (order: {', '.join(order)})"
                                                    if order else ""), ""]
        for s in r["scenarios"]:
            if s in r["data"]:
                lines += _scenario_section(r, s, plots[(r["repeat"], s)])
        lines += _breaking_section(r)
        lines += capacity_section(r["capacity"])
        lines += _resources_section(r, None)
    if cpu_plot:
        lines += [f"![CPU per service]({cpu_plot})", ""]
    lines += hardware_section(run)
    lines += footer_lines()
    return "\n".join(lines)


def headline(res: dict[str, Any]) -> dict[str, Any]:
    """{arch: {breaking_point_users, max_rps, max_performance_rps, p50_ms_1_user,
    p99_ms_1_user, capacity_rps, ..., cpu_ms_per_request: {service: ms},
    cpu_ms_per_request_stack, valid}} for the manifest and the results index: bare numbers
    for a run of one repeat, repeat summaries (median, CI, CV, values) for several."""
    return res["headline"]


def _repeat_doc(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "numbers": {s: {a: rd.numbers.to_dict() for a, rd in per.items()}
                    for s, per in r["data"].items()},
        "comparisons": {
            s: {k: c.to_dict() for k, c in d.items()} for s, d in r["comparisons"].items()
        },
        "breaking_points": {a: bp.to_dict() for a, bp in r["breaking_points"].items()},
        **({"capacity": r["capacity"]} if r["capacity"] else {}),
        "resources": r["resources"],
        "headline": r["headline"],
    }


def write_report(run_folder_path: str | Path, res: dict[str, Any]) -> Report:
    """Write report.md, report.json and plots of ``res`` (analyse's) into the folder. A run
    of one repeat keeps report.json's layout of runs before repeats; several give each
    repeat's numbers under "repeats" and the summaries in "headline"."""
    run = Path(run_folder_path)
    plots = {(r["repeat"], s): _plot_scenario(run, s, per, _suffix(res, r["repeat"]))
             for r in res["repeats"] for s, per in r["data"].items()}
    cpu_plot = _plot_cpu(run, res)
    docs = [{"repeat": r["repeat"], **_repeat_doc(r)} for r in res["repeats"]]
    doc = ({k: v for k, v in docs[0].items() if k != "repeat"} if len(docs) == 1
           else {"repeats": docs})
    doc.update(headline=res["headline"], repeat_comparisons=res["repeat_comparisons"])
    return write_files(run, render(res, run, plots, cpu_plot), doc,
                       [*plots.values(), cpu_plot])
