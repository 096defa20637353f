"""Experiment 1's report: read the run folder only (manifest + raw/profiles), break every
pyinstrument profile down by category (breakdown.py), and write report.json and report.md.
A committed run can be re-reported anywhere; every number in the report comes from a file."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from experiments.constants import DEFAULT_BUILDS
from experiments.exp1_profiling.breakdown import (
    CATEGORIES,
    CPU_CATEGORIES,
    SCALE_TRUSTED,
    combine,
    cpu_breakdown,
    cpu_per_request,
    pyinstrument_breakdown,
    session_file,
    yappi_top,
)
from experiments.reporting import Report, footer_lines, header_lines, write_files

ROLE_LABELS = {"scoring": "scoring handler", "model": "model API", "client": "client"}


def index_profiles(folder: Path) -> dict[str, Path]:
    """name -> directory of every profile under raw/profiles/ (any host, the client)."""
    found: dict[str, Path] = {}
    for meta in (folder / "raw" / "profiles").rglob("*.meta.json"):
        found[meta.name.removesuffix(".meta.json")] = meta.parent
    return found


def _files(directory: Path, name: str) -> list[str]:
    return sorted(p.name for p in directory.glob(f"{name}.*"))


def _analyse_one(folder: Path, directory: Path, name: str) -> dict[str, Any]:
    meta = json.loads((directory / f"{name}.meta.json").read_text())
    entry = {"name": name, "dir": str(directory.relative_to(folder)),
             "files": _files(directory, name), "profiler": meta["profiler"],
             "clock": meta["clock"], "kind": meta["kind"], "service": meta.get("service"),
             "pid": meta.get("pid"), "requests": meta.get("requests"),
             "async_mode": meta.get("async_mode"), "duration_s": meta.get("duration_s")}
    if meta["profiler"] == "pyinstrument":
        entry["breakdown"] = pyinstrument_breakdown(session_file(directory, name))
        entry["cpu"] = cpu_breakdown(session_file(directory, name))
    else:
        entry["yappi"] = yappi_top(directory / f"{name}.json")
    return entry


def analyse(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    found = index_profiles(folder)
    missing: list[str] = []
    out: dict[str, Any] = {"profile": manifest.get("profile"), "architectures": {},
                           "missing": missing}
    archs = out["architectures"]
    singles: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for entry in manifest.get("profiles") or []:
        if entry["name"] not in found:
            missing.append(f"{entry['service']} {entry['profiler']}: {entry['name']}")
            continue
        singles[(entry["arch"], entry["role"])].append(
            _analyse_one(folder, found[entry["name"]], entry["name"]))
    for (arch, role), profiles in singles.items():
        pyi = [p["breakdown"] for p in profiles if "breakdown" in p]
        archs.setdefault(arch, {"request": {}, "yappi": {}, "windows": []})
        archs[arch]["request"][role] = {**combine(pyi), "files": [p["name"] for p in profiles]}
        yappis = [p for p in profiles if "yappi" in p]
        if yappis:
            archs[arch]["yappi"][role] = {**yappis[0]["yappi"], "name": yappis[0]["name"]}
    for window in manifest.get("windows") or []:
        if window.get("error"):  # a build that did not deploy or answer
            missing.append(f"build {window['build']}: {window['error']}")
            continue
        arch = window["arch"]
        archs.setdefault(arch, {"request": {}, "yappi": {}, "windows": []})
        services = {}
        for role, opened in window.get("services", {}).items():
            wid = opened.get("window_id")
            names = sorted(n for n in found if wid and f"_win-{wid}_" in n)
            if not names:
                missing.append(f"{role}-{arch} window {window['profiler']}: "
                               f"{opened.get('error') or opened.get('status') or 'no file'}")
                continue
            workers = [_analyse_one(folder, found[n], n) for n in names]
            pyi = [w["breakdown"] for w in workers if "breakdown" in w]
            requests = sum(w["requests"] or 0 for w in workers)
            cpu = cpu_per_request([w["cpu"] for w in workers if "cpu" in w], requests)
            services[role] = {
                "window_id": wid, "workers": len(workers), "files": names,
                "requests": requests,
                "clock": workers[0]["clock"], "profiler": workers[0]["profiler"],
                **({"breakdown": combine(pyi)} if pyi else {}),
                **({"cpu_per_request": cpu} if cpu else {}),
                **({"yappi": [w["yappi"] for w in workers if "yappi" in w]}
                   if not pyi else {})}
        archs[arch]["windows"].append({"profiler": window["profiler"],
                                       "build": window.get("build", "default"),
                                       "window_s": window["window_s"],
                                       "users": window["users"], "services": services})
    out["files"] = [_analyse_one(folder, d, n) | {"breakdown": None, "yappi": None, "cpu": None}
                    for n, d in sorted(found.items())]
    return out


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _summary(arch: str, request: dict[str, Any]) -> str:
    scoring = request.get("scoring")
    if not scoring or not scoring.get("profiles"):
        return f"No pyinstrument profile of a {arch} scoring request was collected."
    share, total = scoring["share"], scoring["sampled_s"]
    top = sorted((k for k in CATEGORIES if share.get(k)), key=lambda k: -share[k])
    parts = ", ".join(f"{CATEGORIES[k].split(' (')[0]} {share[k]:.0%}" for k in top[:5])
    return (f"**{arch}**: one scoring request took {_ms(total)} in the scoring handler "
            f"(pyinstrument, wall clock, mean of {scoring['profiles']}): {parts}.")


def window_cpu(arch_data: dict[str, Any], role: str) -> dict[str, Any] | None:
    """The CPU per request of a role in the architecture's pyinstrument window of the
    default build at the window's own load, or None."""
    for window in arch_data["windows"]:
        cpu = (window["services"].get(role) or {}).get("cpu_per_request")
        if window["profiler"] == "pyinstrument" and window["build"] == "default" and cpu:
            return cpu
    return None


def _window_rate(w: dict[str, Any], role: str) -> float | None:
    s = w["services"].get(role) or {}
    return s["requests"] / w["window_s"] if s.get("requests") and w["window_s"] else None


def contended(arch: str, cpu: dict[str, Any]) -> bool:
    """An async window whose split is off only because its core was saturated: the busy
    samples outweigh the measured CPU (run-queue waits), while an event loop's own waits are
    idle samples, so the proportions still hold. A blocking (sync) worker's socket reads are
    busy samples too: its low scale means nothing of the kind."""
    return (arch == "async" and cpu["method"] == "cpu_time" and not cpu["split_trusted"]
            and 0 < cpu["scale"] < SCALE_TRUSTED[0])


def load_cpu_lines(numbers: dict[str, Any]) -> list[str]:
    """Every pyinstrument window side by side (default load, and the builds' heavier ones):
    the scoring handler's CPU per request by category, and the model API's total, so a
    growth with load, or a build's saving, shows where it is."""
    rows = [(arch, w) for arch, data in numbers["architectures"].items()
            for w in data["windows"]
            if w["profiler"] == "pyinstrument"
            and (w["services"].get("scoring") or {}).get("cpu_per_request")]
    if not rows:
        return []
    lines = ["## Where the scoring handler's CPU goes, by build and load", "",
             "Each pyinstrument window: the build, its architecture, the Locust users (1 "
             "request per second each: the offered rate) and the scoring requests the handler "
             "served per second in the window (below the users when past its knee), then the "
             "handler's CPU ms per request by category (as in the window sections below; "
             "\"-\" where the samples do not account for the measured CPU) and the model "
             "API's CPU ms per (model) request. Profiled: every figure includes the profiler's "
             "overhead, so compare them with each other, not with unprofiled runs. \"≈\": an "
             "async handler on a saturated core, whose busy samples also hold the time it was "
             "runnable but waiting for the core (scale below "
             f"{SCALE_TRUSTED[0]:.2f}): an event loop samples its I/O waits as idle, so that "
             "wait falls on whatever code it preempted, and the categories are the measured "
             "CPU split in the proportions of the busy samples.", "",
             "| build | arch | users | served req/s | " + " | ".join(
                 CPU_CATEGORIES[k].split(" (")[0] for k in CPU_CATEGORIES)
             + " | **scoring total** | model API total |",
             "|---|---|---:|---:|" + "---:|" * (len(CPU_CATEGORIES) + 2)]
    for arch, w in rows:
        cpu = w["services"]["scoring"]["cpu_per_request"]
        model = (w["services"].get("model") or {}).get("cpu_per_request")
        rate = _window_rate(w, "scoring")
        cells = [f"{cpu['ms_per_request'][k]:.2f}" if cpu["split_trusted"]
                 else f"≈{cpu['ms_per_request'][k]:.2f}" if contended(arch, cpu) else "-"
                 for k in CPU_CATEGORIES]
        lines.append(f"| {w['build']} | {arch} | {w['users']} | "
                     f"{'n/a' if rate is None else f'{rate:.0f}'} | " + " | ".join(cells)
                     + f" | **{cpu['total_ms']:.2f}** | "
                     + (f"{model['total_ms']:.2f}" if model else "n/a") + " |")
    return [*lines, ""]


def _cpu_summary(arch: str, cpu: dict[str, Any]) -> str:
    head = (f"**{arch}** under load (window profile): the scoring handler spent "
            f"{cpu['total_ms']:.1f} ms of CPU per request")
    if not cpu["split_trusted"]:
        return head + " (no split by category: its samples miss its CPU, see the window)."
    ms = cpu["ms_per_request"]
    top = sorted((k for k in ms if ms[k] > 0), key=lambda k: -ms[k])
    return head + ": " + ", ".join(f"{CPU_CATEGORIES[k].split(' (')[0]} {ms[k]:.2f}"
                                   for k in top[:5]) + "."


def _request_table(request: dict[str, Any]) -> list[str]:
    roles = [r for r in ("scoring", "model", "client") if r in request]
    lines = ["| where the wall time goes | " + " | ".join(ROLE_LABELS[r] for r in roles) + " |",
             "|---|" + "---:|" * len(roles)]
    for key, label in CATEGORIES.items():
        if not any(request[r]["seconds"].get(key) for r in roles):
            continue
        cells = [f"{_ms(request[r]['seconds'][key])} ({request[r]['share'][key]:.1%})"
                 for r in roles]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| **total (sampled wall time)** | "
                 + " | ".join(f"**{_ms(request[r]['sampled_s'])}**" for r in roles) + " |")
    lines.append("| profiles averaged | " + " | ".join(str(request[r]["profiles"])
                                                       for r in roles) + " |")
    return lines


def _yappi_lines(yappi: dict[str, Any]) -> list[str]:
    lines = []
    for role, data in yappi.items():
        lines += ["", f"yappi, {ROLE_LABELS[role]} (clock: **{data['clock']}**, "
                      f"`{data['name']}`): functions with the most own time",
                  "", "| function | category | calls | own time | total time |",
                  "|---|---|---:|---:|---:|"]
        for row in data["top"][:6]:
            lines.append(f"| `{row['function']}` | {row['category']} | {row['ncall']} | "
                         f"{_ms(row['tsub_s'])} | {_ms(row['ttot_s'])} |")
    return lines


def _window_lines(windows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for w in windows:
        services = w["services"]
        build = "" if w["build"] == "default" else f", build `{w['build']}`"
        head = (f"Window profile, {w['profiler']}{build}: {w['window_s']:g} s under "
                f"{w['users']} "
                "Locust users (every worker of each service that served a request in the "
                "window; its whole thread, idle time included)")
        lines += ["", head, ""]
        pyi = {r: s for r, s in services.items() if "breakdown" in s}
        for role, s in services.items():
            lines.append(f"- {ROLE_LABELS[role]}: {s['workers']} worker file(s), "
                         f"{s['requests']} requests, clock {s['clock']}")
        if pyi:
            roles = list(pyi)
            lines += ["", "| category | " + " | ".join(ROLE_LABELS[r] for r in roles) + " |",
                      "|---|" + "---:|" * len(roles)]
            busy = {r: sum(v for k, v in pyi[r]["breakdown"]["seconds"].items()
                           if k != "event_loop") for r in roles}
            lines[-2] = ("| category (% of wall; % of non-idle) | "
                         + " | ".join(ROLE_LABELS[r] for r in roles) + " |")
            for key, label in CATEGORIES.items():
                if not any(pyi[r]["breakdown"]["seconds"].get(key) for r in roles):
                    continue
                cells = []
                for r in roles:
                    b = pyi[r]["breakdown"]
                    cell = f"{b['share'][key]:.1%}"
                    if key != "event_loop" and busy[r]:
                        cell += f"; {b['seconds'][key] / busy[r]:.0%}"
                    cells.append(cell)
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += _cpu_lines(services)
        for role, s in services.items():
            for data in s.get("yappi", [])[:1]:
                lines += _yappi_lines({role: {**data, "name": s["files"][0]}})
    return lines


def _cpu_lines(services: dict[str, Any]) -> list[str]:
    """ms of CPU per request per category in a window (breakdown.cpu_per_request); a
    service whose samples do not account for its measured CPU gets its total only."""
    cpu = {r: s["cpu_per_request"] for r, s in services.items() if s.get("cpu_per_request")}
    if not cpu:
        return []
    roles = list(cpu)

    def cell(r: str, key: str) -> str:
        return f"{cpu[r]['ms_per_request'][key]:.2f}" if cpu[r]["split_trusted"] else "-"

    lines = ["", "CPU per request in this window, ms (idle waits excluded):", "",
             "| category | " + " | ".join(ROLE_LABELS[r] for r in roles) + " |",
             "|---|" + "---:|" * len(roles)]
    for key, label in CPU_CATEGORIES.items():
        if not any(cpu[r]["ms_per_request"][key] and cpu[r]["split_trusted"] for r in roles):
            continue
        lines.append(f"| {label} | " + " | ".join(cell(r, key) for r in roles) + " |")
    lines.append("| **total (measured CPU / requests)** | " + " | ".join(
        f"**{cpu[r]['total_ms']:.2f}**" for r in roles) + " |")
    lines.append("| requests in the window | " + " | ".join(str(cpu[r]["requests"])
                                                            for r in roles) + " |")
    lines.append("| scale (measured CPU / busy sampled wall) | " + " | ".join(
        f"{cpu[r]['scale']:.2f}" for r in roles) + " |")
    if any(cpu[r]["unattributed_ms"] for r in roles):
        lines.append("| CPU with no busy sample (not in a category) | " + " | ".join(
            f"{cpu[r]['unattributed_ms']:.2f}" for r in roles) + " |")
    if {cpu[r]["method"] for r in roles} == {"cpu_time"}:
        how = ("pyinstrument samples wall time only, so each category's CPU is its busy "
               "(non-idle) sampled wall time scaled to the CPU the process measured over the "
               "session (pyinstrument's `cpu_time`; there is no CPU time per sample): on a "
               "core shared with the other services a busy sample's wall time includes waiting "
               "for the CPU, which the scale takes out. The profiler's own CPU is in that "
               "measurement and is spread over the categories, so these are upper bounds of "
               "the unprofiled cost; async services ran on asyncio's loop, not uvloop.")
    else:
        how = ("Some profiles have no measured CPU time (`cpu_time`): there busy sampled wall "
               "time counts as CPU, right only on an uncontended core.")
    lo, hi = SCALE_TRUSTED
    untrusted = ("" if all(cpu[r]["split_trusted"] for r in roles) else
                 f" \"-\": the busy samples do not account for the measured CPU (scale "
                 f"outside {lo:.2f}-{hi:.2f}), so only the total is given: pyinstrument "
                 "charges a burst of work shorter than its 1 ms interval to the wait after it "
                 "(scale above: a service with little work per request), and a blocking "
                 "worker's socket reads are waits it samples as busy (scale below: sync).")
    return [*lines, "", "Idle (a wait in epoll/select, or in a server's C loop) counts as no "
            "CPU. " + how + untrusted]


def render(numbers: dict[str, Any], folder: Path) -> str:
    manifest = json.loads((folder / "manifest.json").read_text())
    lines = [*header_lines(manifest, folder), "",
             "**Profiled run**: every service ran with `SCORING_LAB_PROFILING=true` and the "
             "profiled requests paid the profilers' overhead. Nothing here is a timing result; "
             "use experiment 3 for those.", "",
             "Each breakdown below is computed from the pyinstrument profiles in `raw/profiles/` "
             "(experiments/exp1_profiling/breakdown.py): every sampled stack goes to the deepest "
             "frame of a specific category (HTTP calls, Redis, the model's prediction, "
             "serialization), else to the deepest framework / event loop / application frame.",
             "Async services were profiled on asyncio's own loop (pyinstrument cannot see "
             "awaits under uvloop).", "", "## Summary", ""]
    for arch, data in numbers["architectures"].items():
        lines.append("- " + _summary(arch, data["request"]))
        if (cpu := window_cpu(data, "scoring")) is not None:
            lines.append("- " + _cpu_summary(arch, cpu))
    lines += ["", *load_cpu_lines(numbers)]
    for arch, data in numbers["architectures"].items():
        lines += ["", f"## {arch}", "", "One scoring request (pyinstrument, wall clock; the "
                  "client column is the caller's own profile of the same kind of call):", ""]
        if data["request"]:
            lines += _request_table(data["request"])
        lines += _yappi_lines(data["yappi"])
        lines += _window_lines(data["windows"])
    if numbers["missing"]:
        lines += ["", "## Missing profiles", ""] + [f"- {m}" for m in numbers["missing"]]
    lines += ["", "## Files", "", "| profile | service | profiler | clock | kind | files |",
              "|---|---|---|---|---|---|"]
    for f in numbers["files"]:
        suffixes = ", ".join(x.removeprefix(f["name"]) for x in f["files"])
        lines.append(f"| `{f['dir']}/{f['name']}` | {f['service']} | {f['profiler']} | "
                     f"{f['clock']} | {f['kind']} | {suffixes} |")
    return "\n".join([*lines, "", *footer_lines()])


def headline(numbers: dict[str, Any]) -> dict[str, Any]:
    """Per architecture (its default build: the builds' heavier windows are the report's):
    the scoring request's sampled wall time and its main shares."""
    out: dict[str, Any] = {}
    for arch, data in numbers["architectures"].items():
        scoring = data["request"].get("scoring")
        if not scoring or not scoring.get("profiles"):
            continue
        share = scoring["share"]
        out[arch] = {"request_ms": scoring["sampled_s"] * 1000,
                     "model_calls_pct": share["http_calls"] * 100,
                     "redis_pct": share["redis"] * 100,
                     "framework_pct": share["framework"] * 100}
        if (cpu := window_cpu(data, "scoring")) is not None:
            out[arch]["scoring_cpu_ms_per_request_under_load"] = cpu["total_ms"]
    return {"builds": DEFAULT_BUILDS, **out} if out else {}


def write_report(folder: str | Path, numbers: dict[str, Any]) -> Report:
    """report.json is the analysis itself (every number of report.md)."""
    folder = Path(folder)
    report = write_files(folder, render(numbers, folder), numbers, [])
    return dataclasses.replace(report, headline=headline(numbers))
