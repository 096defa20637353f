"""The report toolkit every experiment's report.py uses: one header (run, status, validity,
versions, load generator, topology), number formatting, the hardware section, the footer, JSON
that stays valid (NaN -> null), the run's analysis parameters, and writing the files.

    lines = [*header_lines(manifest, run), ...the experiment's sections..., *footer_lines(run)]
    return write_files(run, "\n".join(lines), {"numbers": ..., "headline": ...}, plots)
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from experiments.analysis.capacity import BUDGETS

# handed on: the reports take every helper from here
from experiments.analysis.manifest import analysis_params, number  # noqa: F401
from hardware.cpus import format_cpu_list
from hardware.machine_state import noise_warnings
from services.sync_app.meinheld_limits import REPORT_NOTE


@dataclasses.dataclass(frozen=True)
class Report:
    """What writing a report produced (every experiment's write_report returns one)."""

    markdown: Path
    json: Path
    plots: list[Path]
    headline: dict[str, Any]


def fmt(v: Any, digits: int = 1) -> str:
    """A number with ``digits`` decimals; "n/a" for None and NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def pct(x: float | None, signed: bool = False) -> str:
    """A fraction as a whole percent ("+12%" when signed); "n/a" for None."""
    return "n/a" if x is None else f"{x:{'+' if signed else ''}.0%}"


def json_safe(v: Any) -> Any:
    """``v`` with NaN and infinities as None, so report.json is strict JSON."""
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_safe(x) for x in v]
    return v


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
                            f"{format_cpu_list(w['cpus']) if w['cpus'] else 'any'})"
                            for w in loadgen.get("workers") or [])
        return [f"- Locust: distributed, master on the controller, workers on {workers}; each "
                "host guards its own workers' CPU"]
    if loadgen:
        cores = format_cpu_list(loadgen["cpus"]) if loadgen.get("cpus") else "any"
        processes = loadgen.get("locust_workers") or 1
        return [f"- Locust: on the controller, cores {cores}, {processes} process(es)"]
    return []


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
        cpus = format_cpu_list(svc["cpus"]) if svc.get("cpus") else ""
        affinity = format_cpu_list(svc["affinity"]) if svc.get("affinity") else "n/a"
        workers = svc.get("workers") or "auto"
        lines.append(f"| {name} | {svc.get('host')} | {svc.get('url') or svc.get('address')} | "
                     f"{cpus} | {affinity} | {workers} |")
    return [*lines, "", "Workers `auto`: the original images' rule counted on the pinned CPU set "
            "(sync 2 per core, async 1 per core, at least 2).", ""]


def status_lines(manifest: dict[str, Any], reasons: list[str] = ()) -> list[str]:
    """An incomplete run first, then every reason the run (or one of its parts) is invalid."""
    reasons = list((manifest.get("validity") or {}).get("reasons", [])) + [
        r for r in reasons if r not in (manifest.get("validity") or {}).get("reasons", [])]
    lines = [f"**INVALID: {r}**" for r in reasons]
    if manifest.get("status") != "complete":
        if manifest.get("interrupted_at"):
            why = (f"interrupted at {manifest['interrupted_at']}: "
                   f"{manifest.get('interrupted_reason', '?')}")
        else:
            why = ("status is still incomplete: the run had not finished when this report was "
                   "written, or it was killed without a record")
        lines.insert(0, f"**INCOMPLETE RUN ({why}); the numbers cover what was measured.**")
    return lines


def header_lines(manifest: dict[str, Any], run: Path, reasons: list[str] = ()) -> list[str]:
    """The top of every report: what ran, when, on which commit, versions and topology, and
    whether its numbers can be trusted. ``reasons``: invalid parts the analysis found."""
    m, meta = manifest, manifest.get("metadata") or {}
    lines = [f"# {m.get('experiment', 'experiment')}: {m.get('name', run.name)}", ""]
    warn = status_lines(m, reasons)
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
    lines += machine_state_lines(m.get("topology") or {}, run)
    return [*lines, REPORT_NOTE, ""]


def host_cpu_sets(topology: dict[str, Any]) -> dict[str, dict[str, list[int]]]:
    """host -> {service or "loadgen": its CPUs}, from the deployed topology."""
    sets: dict[str, dict[str, list[int]]] = {}
    for name, svc in (topology.get("services") or {}).items():
        if svc.get("host") and svc.get("cpus"):
            sets.setdefault(svc["host"], {})[name] = list(svc["cpus"])
    for gen in topology.get("loadgen") or []:
        if gen.get("host") and gen.get("cpus"):
            sets.setdefault(gen["host"], {}).setdefault("loadgen", []).extend(gen["cpus"])
    return sets


def machine_state_lines(topology: dict[str, Any], run: Path) -> list[str]:
    """A warning for each machine setting that adds noise, per host, from the system.json
    the run collected (hardware.machine_state; runs recorded before it have none)."""
    lines = []
    for host, cpu_sets in sorted(host_cpu_sets(topology).items()):
        system = run / "raw" / "hardware" / host / "system.json"
        try:
            doc = json.loads(system.read_text())
        except (OSError, ValueError):
            continue
        if "machine_state" not in doc:
            continue
        lines += [f"- Machine state ({host}): {w}" for w in noise_warnings(doc, cpu_sets)]
    return lines


def capacity_headline(entry: dict[str, Any] | None) -> dict[str, Any]:
    """Headline figures of one architecture's capacity search (none without one)."""
    if not entry:
        return {}
    shared = entry["shared"]
    head = {"capacity_rps": _round(shared["capacity"]),
            "capacity_status": shared["status"],
            "first_overloaded_rps": _round(shared["first_failing"])}
    if shared["status"] in LOWER_BOUNDS:
        head["capacity_is_lower_bound"] = True
    if shared.get("proof"):
        # the max-performance run at the capacity met the bound too (else it was none)
        head["capacity_confirmed"] = shared["proof"]["outcome"] == "pass"
    if "relative" in entry:
        head["capacity_relative_rps"] = _round(entry["relative"]["capacity"])
    return head


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


_STATUS = {
    "found": "found",
    "above_range": "every rate up to the maximum passed: a lower bound",
    # with a confidence verdict the minimum is the lowest rate a step can decide at
    # (experiments.analysis.capacity.decidable_rate)
    "below_range": "even the minimum rate failed (or, with a confidence, could not pass)",
    # the step table gives the reason: the generator limited it, or it started unrecovered
    "invalid": "**stopped: a step could not be judged (its reason in the steps table)**",
    "unfinished": ("a budget ran out before the bracket closed on a held rate (capacity: the "
                   "highest rate that passed a hold, a lower bound)"),
}
LOWER_BOUNDS = ("above_range", "unfinished")  # a capacity that is only a lower bound


def capacity_status(entry: dict[str, Any]) -> str:
    """What a search's status means, naming the budget that ran out when one did, and where
    its confidence verdicts left rates undecided."""
    if entry["status"] == "unfinished" and entry.get("capacity") is None:
        # a budget ran out before any rate passed: nothing below the bound is known, so no
        # lower bound; the lowest rate that failed is an upper one
        ran_out = BUDGETS.get(entry.get("budget"), "a budget ran out")
        said = f"**no capacity**: {ran_out} before any rate passed"
    elif entry["status"] == "unfinished" and entry.get("budget") == "proofs":
        said = (f"**a lower bound**: {BUDGETS['proofs']} and the last failed (capacity: the "
                "highest rate below it that passed a hold, never proved)")
    elif entry["status"] == "unfinished" and entry.get("budget") in BUDGETS:
        said = (f"**a lower bound**: {BUDGETS[entry['budget']]} before the bracket closed on "
                "a held rate (capacity: the highest rate that passed a hold)")
    else:
        said = _STATUS.get(entry["status"], entry["status"])
    return said + undecided_zone(entry.get("steps") or [])


def undecided_zone(steps: list[dict[str, Any]]) -> str:
    """The rates a confidence verdict left undecided (after any extension): between the
    highest confident pass and the lowest confident failure the bound is within the
    measurement's resolution; the search counts them as not passed, so its capacity errs low."""
    live = [s for s in steps if not s.get("superseded")]
    undecided = sorted(s["rate"] for s in live if s["outcome"] == "undecided")
    if not undecided:
        return ""
    failed = [s["rate"] for s in live if s["outcome"] == "fail" and s["rate"] > undecided[0]]
    over = f"; confidently over from {fmt(min(failed))}" if failed else ""
    span = fmt(undecided[0]) if len(undecided) == 1 else \
        f"{fmt(undecided[0])}-{fmt(undecided[-1])}"
    return f" (undecided at {span} req/s{over}: counted as not passed)"


def headline_capacity(value: float | None, status: str | None) -> float | str | None:
    """A capacity as a headline (manifest, results index, compare) holds it: a lower bound
    as the text ">= x", which `compare` names and does not weigh against a value."""
    if value is None:
        return None
    return f">= {round(value, 1)}" if status in LOWER_BOUNDS else round(value, 1)


def capacity_figure(entry: dict[str, Any], digits: int = 1) -> str:
    """A capacity as a table shows it: a lower bound is written as one (">= x")."""
    value = fmt(entry.get("capacity"), digits)
    return f">= {value}" if entry.get("status") in LOWER_BOUNDS and entry.get("capacity") \
        else value


# Below this many requests a step's p99 is its slowest request or the one before it.
FEW_FOR_P99 = 100


def capacity_section(capacity: dict[str, dict]) -> list[str]:
    """The capacity searches: per architecture the capacity under each bound and every step."""
    if not capacity:
        return []
    lines = ["## Capacity under a latency bound", "",
             "The highest open-model arrival rate whose p99 response time (from each request's "
             "scheduled send, so queueing counts) meets the bound with few enough errors "
             "(MLPerf LoadGen's server scenario), found by growing the rate until a step fails "
             "and bisecting; when the protocol sets `hold_s`, the rate found must also pass a "
             "hold (a longer step at that rate) to count, and a failed hold sends the search on "
             "below it in holds. With a `confidence`, a verdict needs the binomial interval on "
             "the share of requests over the bound (a failed request counts as over) to lie on "
             "one side of 1 %: otherwise the step is undecided, measured again longer, and "
             "still undecided it counts as not passed; a hold also fails when its last third "
             "alone is over (a drifting tail). A step starts once the stack answers probes as "
             "it does idle "
             "(\"waited\": how long that took; \"-\": a run before such waits). Every verdict "
             "below is recomputed from the step folders.", "",
             "| architecture | bound | capacity req/s | first overloaded req/s | status |",
             "|---|---|---|---|---|"]
    for arch, entry in capacity.items():
        for kind in ("shared", "relative"):
            e = entry.get(kind)
            if not e:
                continue
            bound = (f"p99 <= {e['p99_bound_ms']:.0f} ms" if kind == "shared" else
                     f"p99 <= {e['factor']:g} x own 1-user p99 {e['one_user_p99_ms']:.0f} ms "
                     f"= {e['p99_bound_ms']:.0f} ms")
            lines.append(f"| {arch} | {bound} | {capacity_figure(e, 2)} | "
                         f"{fmt(e['first_failing'])} | {capacity_status(e)} |")
    lines += proof_lines(capacity)
    lines += hold_length_lines(capacity)
    lines += ["", "| architecture | rate | step | waited s | sent/s | requests | errors | "
              "p99 response ms | p99 service ms | generator CPU | in-flight cap hits | "
              "shared bound |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    few = False  # whether a step has too few requests for its p99 to stand apart from its max
    resends = False  # whether a step resent a request its connection lost unanswered
    for arch, entry in capacity.items():
        for st in sorted(entry["shared"]["steps"], key=lambda x: (x["rate"], x.get("hold", False))):
            kind = (f"proof {st['proof']}" if st.get("proof") else
                    "hold" if st.get("hold") else "step")
            if st.get("duration_s"):
                kind += f" {st['duration_s']:.0f} s"
            waited = st.get("recovery_wait_s")
            waited = "-" if waited is None else (
                f"{waited:.1f}" + (" (services restarted)" if st.get("restarted") else "")
                + ("" if st.get("recovered") else " (not recovered)"))
            lines.append(
                f"| {arch} | {fmt(st['rate'])} | {kind} | {waited} | {fmt(st['achieved_rate'])} | "
                f"{st['requests']}{' *' if st['requests'] < FEW_FOR_P99 else ''} | "
                f"{st['errors']}{f' ({resent} resent)' if (resent := st.get('retried')) else ''} | "
                f"{fmt(st['p99_response_ms'])} | {fmt(st['p99_service_ms'])} | "
                f"{st['loadgen_cpu_fraction']:.0%} | {st['inflight_cap_hits']} | "
                f"{st['outcome']}{' (superseded by a longer step)' if st.get('superseded') else ''}"
                f": {st['reason']}{_windows(st)} |")
            few = few or st["requests"] < FEW_FOR_P99
            resends = resends or bool(st.get("retried"))
    if resends:
        lines += ["", "resent: requests the server closed without a byte of answer, sent once "
                  "more (counted as answered if the resend was; their response time includes "
                  "both tries). meinheld does this when its keep-alive timer fires while a "
                  "blocking request holds the worker (experiments/load/locustfile.py, `_score`)."]
    if few:
        lines += ["", f"\\* fewer than {FEW_FOR_P99} requests (at a low rate, a step capped by "
                  "the protocol's `max_step_s`): its p99 is its slowest request or next to it, "
                  "so one slow request fails the step; a capacity found from such steps errs "
                  "low, never high."]
    return [*lines, ""]


def proof_lines(capacity: dict[str, dict]) -> list[str]:
    """Whether each capacity held when run again as the max-performance load (judged as a
    hold under the same bound): a capacity its own next run cannot hold was not one."""
    rows = [(arch, e["shared"]["proof"]) for arch, e in capacity.items()
            if e["shared"].get("proof")]
    if not rows:
        return []
    lines = ["", "The proof: the max-performance run at the capacity found, judged as one more "
             "hold under the same bound.", "",
             "| architecture | rate req/s | requests | p99 response ms | verdict |",
             "|---|---|---|---|---|"]
    said = []
    for arch, last in rows:
        # under proof_search_on every proof, the failed ones counted as holds of the search
        proofs = capacity[arch]["shared"].get("proofs") or [last]
        for n, p in enumerate(proofs, 1):
            verdict = "**confirmed**" if p["outcome"] == "pass" else \
                f"**not confirmed ({p['outcome']})**: " + (
                    "counted as a failed hold, the search went on below it"
                    if n < len(proofs) else "the capacity was not one")
            name = arch if len(proofs) == 1 else f"{arch} (proof {n})"
            lines.append(f"| {name} | {fmt(p['rate'])} | {p['requests']} | "
                         f"{fmt(p['p99_response_ms'])} | {verdict}: {p['reason']}"
                         f"{_windows({**p, 'hold': True})} |")
        if capacity[arch]["shared"].get("proofs") is not None:
            said.append(f"- {arch}: {proof_story(capacity[arch]['shared'])}")
    return lines + (["", *said] if said else [])


def proof_story(shared: dict[str, Any]) -> str:
    """What the proofs of one search did, under proof_search_on: each failed proof, the
    search on below it, and how the last one ended."""
    proofs = shared["proofs"]
    parts = [f"proof failed at {fmt(p['rate'])} req/s (p99 {fmt(p['p99_response_ms'])} ms"
             f"{'' if p['outcome'] == 'fail' else ', ' + p['outcome']}): searched on below"
             for p in proofs[:-1]]
    last = proofs[-1]
    figure = capacity_figure(shared, 2)
    if last["outcome"] == "pass":
        parts.append(f"capacity {figure} req/s, proof confirmed")
    elif shared.get("capacity") is not None and shared.get("budget") == "proofs":
        parts.append(f"proof failed at {fmt(last['rate'])} req/s (p99 "
                     f"{fmt(last['p99_response_ms'])} ms), {len(proofs)} proofs of "
                     f"{len(proofs)} spent: capacity {figure} req/s, a lower bound, not proved")
    else:
        parts.append(f"proof {last['outcome']} at {fmt(last['rate'])} req/s (p99 "
                     f"{fmt(last['p99_response_ms'])} ms); the search below it ended "
                     f"{shared['status']}, capacity {figure} req/s")
    return "; ".join(parts)


def hold_length_lines(capacity: dict[str, dict]) -> list[str]:
    """Capacity against hold length, from the holds cut short (experiments.analysis.capacity.
    capacity_by_hold_length): whether a longer hold would have found less."""
    rows = [(arch, r) for arch, entry in capacity.items()
            for r in entry["shared"].get("by_hold_length") or []]
    if not rows:
        return []
    lines = ["", "Capacity against hold length: every hold of the search cut to its first T "
             "seconds and judged again; per T, the highest held rate that passes with every "
             "held rate below it passing (n/a: none). A capacity that falls as T grows is a "
             "tail that drifts at a fixed rate.", "",
             "| architecture | hold T s | holds at least T long | capacity req/s | first held "
             "rate not passed | verdicts (rate: outcome) |", "|---|---|---|---|---|---|"]
    for arch, r in rows:
        verdicts = ", ".join(f"{v['rate']:.1f}: {v['outcome']}" for v in r["verdicts"])
        lines.append(f"| {arch} | {r['hold_s']:.0f} | {r['holds']} | {fmt(r['capacity'])} | "
                     f"{fmt(r['first_not_passed'])} | {verdicts} |")
    return lines


def _windows(step: dict[str, Any]) -> str:
    """A hold's p99 per 5 s of schedule: whether its tail held still or drifted."""
    windows = step.get("window_p99_ms") if step.get("hold") else None
    if not windows:
        return ""
    # None: a window whose p99 is a request that failed
    return "; p99 per 5 s: " + ", ".join("failed" if w is None else f"{w:.0f}"
                                          for w in windows)


def hardware_section(run: Path) -> list[str]:
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


def footer_lines() -> list[str]:
    return ["---", "Generated by `python -m experiments report` from this folder only; raw/ is "
            "the data, this file can be rebuilt at any time.", ""]


def write_files(run: Path, markdown: str, doc: dict[str, Any], plots: list[str | None]
                ) -> Report:
    """Write report.md and report.json (``doc`` made strict JSON) into the run folder."""
    (run / "report.md").write_text(markdown)
    doc = json_safe(doc)
    (run / "report.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return Report(run / "report.md", run / "report.json", [run / p for p in plots if p],
                  doc.get("headline") or {})


def capacity_lines(res: dict) -> list[str]:
    """A ladder's capacity per rung (experiments.analysis.ladder) at the shared bound beside
    its predicted ceiling, then the steps."""
    rows = [r for r in res["rows"] if "capacity_rps" in r]
    if not rows:
        return []
    bound = rows[0]["capacity_p99_bound_ms"]
    status = {"found": "found",
              "above_range": "every rate passed (max_rate too low): a lower bound",
              "below_range": "even the minimum rate failed",
              "invalid": "**invalid: a step could not be judged (reason in the steps table)**",
              # which budget ran out, where the search says (runs before it: not said)
              "unfinished": "a budget ran out before the bracket closed: a lower bound"}
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
        cap = capacity_figure({"capacity": r["capacity_rps"], "status": r["capacity_status"]})
        if "capacity_repeats" in r:
            s = r["capacity_repeats"]
            cv = f", CV {s['cv']:.0%}" if s.get("cv") is not None else ""
            cap += (f" ({'/'.join(fmt(x) for x in s['values'])}{cv}"
                    f"{' **unstable**' if s.get('unstable') else ''})")
        said = (capacity_status({"status": r["capacity_status"],
                                 "budget": r.get("capacity_budget"),
                                 "capacity": r["capacity_rps"]})
                if r.get("capacity_budget") else
                status.get(r["capacity_status"], r["capacity_status"]))
        lines.append(f"| {r['variant']} | {r['arch']} | {cap} | {said} | "
                     f"{fmt(r['first_overloaded_rps'])} | {fmt(r['predicted_rps'])} | "
                     f"{pct(r['capacity_over_predicted'])} | "
                     f"{fmt(r.get('bounded_predicted_rps'))} | "
                     f"{pct(r.get('capacity_over_bounded'))} | {fmt(r['max_rps'])} |")
    steps = {f"{v}/{a}": e for v, by_arch in res["capacity"].items() for a, e in by_arch.items()}
    detail = capacity_section(steps)
    return [*lines, "", "### Capacity search steps", "", *detail[2:]]
