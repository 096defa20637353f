"""Write report.md, report.json and PNG plots of a result folder, from the folder alone
(manifest.json, raw/locust/<scenario>/<arch>/ CSVs, raw/resources/<host>.csv,
raw/hardware/<host>/). Rebuildable at any time:

    python -m experiments.report results/<run folder>
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.analysis.breaking_point import (  # noqa: E402
    BreakingPoint,
    detect_breaking_point,
    rule_sentence,
)
from experiments.analysis.stats import compare  # noqa: E402
from experiments.analysis.summary import (  # noqa: E402
    RunData,
    analyse_run_dir,
    cpu_series,
    load_resource_samples,
    resource_usage,
)
from experiments.protocol import AnalysisParams, BreakingPointParams, GuardParams  # noqa: E402

LOAD_TEST = "load_test"
RESPONSE_TIME = "response_time"
MAX_PERFORMANCE = "max_performance"


def _f(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def _known(cls: type, d: dict | None) -> dict:
    """The keys of d that the dataclass cls knows (older or newer manifests still load)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in (d or {}).items() if k in names}


def _params(manifest: dict) -> tuple[AnalysisParams, GuardParams]:
    """Analysis and guard parameters of the run, from the protocol in its manifest."""
    proto = manifest.get("protocol") or {}
    a = dict(proto.get("analysis") or {})
    bp = BreakingPointParams(**_known(BreakingPointParams, a.pop("breaking_point", {})))
    analysis = AnalysisParams(breaking_point=bp, **_known(AnalysisParams, a))
    return analysis, GuardParams(**_known(GuardParams, proto.get("guard")))


def _layout(run: Path, manifest: dict) -> tuple[list[str], list[str]]:
    """(scenarios in protocol order, architectures with sync first) found under raw/locust."""
    base = run / "raw" / "locust"
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


def analyse_folder(run_path: str | Path) -> dict[str, Any]:
    """Every number the report shows, computed from the folder."""
    run = Path(run_path)
    manifest = json.loads((run / "manifest.json").read_text())
    analysis, guard = _params(manifest)
    scenarios, archs = _layout(run, manifest)
    data: dict[str, dict[str, RunData]] = {}
    for s in scenarios:
        for a in archs:
            d = run / "raw" / "locust" / s / a
            if (d / "scenario.json").exists() or any(d.glob("requests_*.csv")):
                data.setdefault(s, {})[a] = analyse_run_dir(
                    d,
                    warmup_s=analysis.warmup_s,
                    lag_s=analysis.breaking_point.lag_s,
                    scenario=s,
                    arch=a,
                )
    out: dict[str, Any] = {
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
            out["comparisons"][s] = {
                "rps": compare(
                    A.window_rps,
                    B.window_rps,
                    test="welch",
                    alpha=analysis.alpha,
                    min_effect=analysis.min_effect,
                    label_a=a_lab,
                    label_b=b_lab,
                ),
                "latency": compare(
                    A.window_rt_ms,
                    B.window_rt_ms,
                    test="mannwhitney",
                    alpha=analysis.alpha,
                    min_effect=analysis.min_effect,
                    label_a=a_lab,
                    label_b=b_lab,
                ),
            }
    for a, rd in data.get(LOAD_TEST, {}).items():
        out["breaking_points"][a] = detect_breaking_point(rd.series, analysis.breaking_point)
    sources = load_resource_samples(run / "raw" / "resources")
    out["resource_sources"] = sources
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
        if MAX_PERFORMANCE in data and a in data[MAX_PERFORMANCE]:
            h["max_performance_rps"] = round(data[MAX_PERFORMANCE][a].numbers.rps, 1)
        if RESPONSE_TIME in data and a in data[RESPONSE_TIME]:
            h["p50_ms_1_user"] = round(data[RESPONSE_TIME][a].numbers.p50_ms, 1)
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
                break
        h["valid"] = all(
            rd.numbers.valid for per in data.values() for x, rd in per.items() if x == a
        )
        head[a] = h
    return head


def build_headline(run_path: str | Path) -> dict[str, Any]:
    """{arch: {breaking_point_users, max_rps, max_performance_rps, p50_ms_1_user,
    cpu_ms_per_request: {service: ms}, valid}} for the manifest and the results index."""
    return analyse_folder(run_path)["headline"]


# --------------------------------------------------------------------------- plots


def _plot_scenario(run: Path, s: str, per_arch: dict[str, RunData]) -> str:
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
    name = f"plot_{s}.png"
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
    for s, per_arch in res["data"].items():
        for a, rd in per_arch.items():
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


def _validity_lines(res: dict[str, Any]) -> list[str]:
    m = res["manifest"]
    reasons = list((m.get("validity") or {}).get("reasons", []))
    for per_arch in res["data"].values():
        for a, rd in per_arch.items():
            for r in rd.numbers.reasons:
                item = f"{rd.numbers.scenario}/{a}: {r}"
                if item not in reasons:
                    reasons.append(item)
    lines = [f"**INVALID: {r}**" for r in reasons]
    if m.get("status") != "complete":
        if m.get("interrupted_at"):
            why = f"interrupted at {m['interrupted_at']}: {m.get('interrupted_reason', '?')}"
        else:
            why = (
                "status is still incomplete: the run had not finished when this report was "
                "written, or it was killed without a record"
            )
        lines.insert(0, f"**INCOMPLETE RUN ({why}); the numbers cover what was measured.**")
    return lines


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
        lines.append(
            f"Planned: {sdoc.get('kind')}, users {users}, pacing {sdoc.get('pacing_s')} s, "
            f"{sdoc.get('total_s')} s."
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
        cells = [_f(getattr(N[a], key), digits) for a in archs]
        extra = ""
        if cmp_:
            c = cmp_[cmp_key] if cmp_key else None
            extra = f" | {_f(c.ratio, 2)} | {c.verdict} |" if c else " | | |"
        return f"| {label} | " + " | ".join(cells) + (extra if cmp_ else " |")

    lines.append(row("requests/s", "rps", 2, "rps"))
    lines.append(
        "| requests/s 95 % CI | "
        + " | ".join(f"{_f(N[a].rps_ci_low, 2)}-{_f(N[a].rps_ci_high, 2)}" for a in archs)
        + (" | | |" if cmp_ else " |")
    )
    lines.append(row("p50 ms", "p50_ms", 1, "latency"))
    lines.append(row("p95 ms", "p95_ms", 1))
    lines.append(row("p99 ms", "p99_ms", 1))
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
                f"| {a} | {bp.users} | {_f(bp.offered_rps, 0)} | {_f(bp.achieved_rps, 1)} "
                f"| {_f(bp.p95_ms, 1)} | {_f(bp.t_s, 0)} | {bp.criterion} "
                f"(fired: {', '.join(f'{k} at {v:.0f} s' for k, v in bp.fired.items())}) "
                f"| {_f(bp.baseline_p95_ms, 1)} | {_f(bp.max_achieved_rps, 1)} |"
            )
        else:
            lines.append(
                f"| {a} | {bp.message} | | | | | | {_f(bp.baseline_p95_ms, 1)} | "
                f"{_f(bp.max_achieved_rps, 1)} |"
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
                    f"| {s} | {a} | {svc} | {_f(u['cpu_total_s'], 2)} | "
                    f"{_f(per * 1000 if per is not None else None, 3)} | "
                    f"{_f(rss / 2**20 if rss else None, 1)} |"
                )
    lines.append("")
    if cpu_plot:
        lines += [f"![CPU per service]({cpu_plot})", ""]
    return lines


def _hardware_section(run: Path) -> list[str]:
    lines = ["## Hardware", ""]
    hosts = sorted(p for p in (run / "raw" / "hardware").glob("*") if p.is_dir())
    if not hosts:
        return lines + ["No hardware report in raw/hardware/.", ""]
    for h in hosts:
        files = ", ".join(
            f"[{f.name}](raw/hardware/{h.name}/{f.name})" for f in sorted(h.iterdir())
        )
        note = ""
        sj = h / "system.json"
        if sj.exists():
            try:
                status = json.loads(sj.read_text()).get("lshw")
                if status and status != "ok":
                    note = f" **lshw: {status}**"
            except ValueError:
                note = " (system.json unreadable)"
        lines.append(f"- {h.name}: {files}{note}")
    return lines + [""]


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
    peaks = [f"{rd.numbers.scenario}/{a}" for per in res["data"].values() for a, rd in per.items()]
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


def topology_table(topology: dict[str, Any]) -> list[str]:
    """Which service ran where, on which cores (as configured and as read back), how many
    workers: from the deploy's topology.json recorded in the manifest."""
    services = topology.get("services") or {}
    if not services:
        return []
    lines = [
        "| service | host | address | CPU set | affinity read back | workers |",
        "|---|---|---|---|---|---|",
    ]
    rows = [(name, svc) for name, svc in sorted(services.items())]
    rows += [("loadgen (Locust)", lg) for lg in topology.get("loadgen") or []]
    for name, svc in rows:
        cpus = ",".join(str(c) for c in svc.get("cpus") or [])
        affinity = ",".join(str(c) for c in svc.get("affinity") or []) or "n/a"
        workers = svc.get("workers") or "auto"
        lines.append(f"| {name} | {svc.get('host')} | {svc.get('url') or svc.get('address')} | "
                     f"{cpus} | {affinity} | {workers} |")
    return [*lines, "", "Workers `auto`: the original images' rule counted on the pinned CPU set "
            "(sync 2 per core, async 1 per core, at least 2).", ""]


def git_line(meta: dict[str, Any]) -> str:
    """The measured commit, and what differed from it when the tree was dirty."""
    dirty = meta.get("git_dirty_paths") or []
    if not meta.get("git_dirty"):
        return str(meta.get("git_commit", "?"))
    return f"{meta.get('git_commit', '?')} (dirty{': ' + ', '.join(dirty) if dirty else ''})"


def load_generator_lines(loadgen: dict[str, Any]) -> list[str]:
    """How Locust ran, from the manifest (runs before distributed mode recorded one host)."""
    if loadgen.get("mode") == "distributed":
        workers = ", ".join(f"{w['host']} ({w['workers']} on cores "
                            f"{','.join(map(str, w['cpus'])) or 'any'})"
                            for w in loadgen.get("workers") or [])
        return [f"- Locust: distributed, master on the controller, workers on {workers}; each "
                "host guards its own workers' CPU"]
    if loadgen:
        cores = ",".join(map(str, loadgen.get("cpus") or [])) or "any"
        processes = loadgen.get("locust_workers") or 1
        return [f"- Locust: on the controller, cores {cores}, {processes} process(es)"]
    return []


def render(res: dict[str, Any], run: Path, plots: dict[str, str], cpu_plot: str | None) -> str:
    m = res["manifest"]
    meta = m.get("metadata") or {}
    lines = [f"# {m.get('experiment', 'experiment')}: {m.get('name', run.name)}", ""]
    warn = _validity_lines(res)
    if warn:
        lines += [*(f"- {w}" for w in warn), ""]
    lines += [
        f"- Status: {m.get('status')}; profile: {m.get('profile')}; arrival: {m.get('arrival')}",
        f"- Started: {m.get('started_at')}; ended: {m.get('ended_at', 'n/a')}",
        f"- Git: {git_line(meta)}; "
        f"Python {meta.get('python_version', '?')}; host {meta.get('hostname', '?')} "
        f"(kernel {meta.get('kernel', '?')})",
        f"- Packages: {', '.join(f'{k} {v}' for k, v in (meta.get('packages') or {}).items())}",
        *load_generator_lines(m.get("loadgen") or {}),
        "",
        *topology_table(m.get("topology") or {}),
    ]
    for w in (m.get("metadata_warnings") or []) + (m.get("warnings") or []):
        lines.append(f"- Warning: {w}")
    lines += _method_section(res)
    for s in res["scenarios"]:
        if s in res["data"]:
            lines += _scenario_section(res, s, plots[s])
    lines += _breaking_section(res)
    lines += _resources_section(res, cpu_plot)
    lines += _hardware_section(run)
    lines += [
        "---",
        "Generated by `python -m experiments.report` from this folder only; "
        "raw/ is the data, this file can be rebuilt at any time.",
        "",
    ]
    return "\n".join(lines)


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    return v


def write_report(run_folder_path: str | Path) -> dict[str, Any]:
    """Write report.md, report.json and plots into the folder. Returns {"report": path,
    "json": path, "plots": [paths], "headline": {...}, "numbers": {scenario: {arch: {...}}}}."""
    run = Path(run_folder_path)
    res = analyse_folder(run)
    plots = {s: _plot_scenario(run, s, per) for s, per in res["data"].items()}
    cpu_plot = _plot_cpu(run, res)
    text = render(res, run, plots, cpu_plot)
    (run / "report.md").write_text(text)
    numbers = {
        s: {a: rd.numbers.to_dict() for a, rd in per.items()} for s, per in res["data"].items()
    }
    doc = _json_safe(
        {
            "numbers": numbers,
            "comparisons": {
                s: {k: c.to_dict() for k, c in d.items()} for s, d in res["comparisons"].items()
            },
            "breaking_points": {a: bp.to_dict() for a, bp in res["breaking_points"].items()},
            "resources": res["resources"],
            "headline": res["headline"],
        }
    )
    (run / "report.json").write_text(json.dumps(doc, indent=2) + "\n")
    all_plots = [run / p for p in plots.values()] + ([run / cpu_plot] if cpu_plot else [])
    return {
        "report": run / "report.md",
        "json": run / "report.json",
        "plots": all_plots,
        "headline": doc["headline"],
        "numbers": numbers,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m experiments.report RUN_FOLDER", file=sys.stderr)
        return 2
    out = write_report(args[0])
    print(out["report"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
