"""Write a hardware report folder: lshw.json, lshw.html, system.json and system.md.

The folder is raw data of a run, so it is never overwritten: an existing non-empty folder is
refused rather than mixed with a new report.
"""

from __future__ import annotations

import json
from pathlib import Path

from hardware.collect import collect_system
from hardware.cpus import format_cpu_list
from hardware.lshw import run_lshw


class OutputExists(Exception):
    """The output folder (or file) already holds data we must not overwrite."""


def prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise OutputExists(f"{out_dir} exists and is not a directory")
        if any(out_dir.iterdir()):
            raise OutputExists(f"{out_dir} is not empty; refusing to overwrite a report")
    out_dir.mkdir(parents=True, exist_ok=True)


def write_report(out_dir: Path, run_dir: str | None = None) -> dict:
    """Write the four files into out_dir (created; must be empty) and return system.json's doc."""
    prepare_out_dir(out_dir)
    lshw = run_lshw(out_dir)
    doc = collect_system(run_dir)
    warnings = doc.pop("warnings") + lshw.warnings
    doc["lshw"] = lshw.status
    doc["warnings"] = warnings
    (out_dir / "system.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / "system.md").write_text(render_markdown(doc))
    return doc


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def _get(doc: dict, *keys, default="?"):
    for key in keys:
        if not isinstance(doc, dict) or doc.get(key) is None:
            return default
        doc = doc[key]
    return doc


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: dict) -> str:
    cpu = doc.get("cpu") or {}
    governors = cpu.get("scaling_governor")
    governor = ", ".join(sorted(set(governors.values()))) if governors else "n/a"
    turbo = cpu.get("turbo")
    turbo_text = "n/a" if not turbo else ("on" if turbo["enabled"] else "off")
    freq = cpu.get("freq_mhz")
    freq_text = "n/a" if not freq else f"{freq['current']:.0f} MHz"
    if freq and freq.get("max"):
        freq_text += f" (max {freq['max']:.0f})"
    lines = [
        f"# Hardware report: {_get(doc, 'hostname')}",
        "",
        f"- Collected: {_get(doc, 'collected_at')} (format {doc.get('format_version')})",
        f"- CPU: {_get(doc, 'cpu', 'model')}, {_get(doc, 'cpu', 'physical_cores')} cores / "
        f"{_get(doc, 'cpu', 'logical_threads')} threads",
        f"- Frequency: {freq_text}; governor: {governor}; turbo: {turbo_text}; "
        f"SMT: {cpu.get('smt') or 'n/a'}",
        f"- Memory: {_gib(_get(doc, 'memory', 'total_bytes', default=None))} total, "
        f"{_gib(_get(doc, 'memory', 'available_bytes', default=None))} available",
        f"- OS: {_get(doc, 'os')}; kernel {_get(doc, 'kernel', 'release')} "
        f"({_get(doc, 'kernel', 'machine')})",
        f"- Python: {_get(doc, 'python', 'version')}",
        f"- Load average: {' '.join(str(x) for x in doc.get('load_average') or []) or '?'}",
        f"- Reporter CPU affinity: {format_cpu_list(doc.get('reporter_cpu_affinity'))}",
        f"- lshw: {doc.get('lshw', '?')}",
        "",
        "## Lab processes",
        "",
    ]
    procs = doc.get("lab_processes")
    if procs:
        lines += ["| service | pid | ppid | CPU affinity | command |", "|---|---|---|---|---|"]
        for p in procs:
            cmd = " ".join(p.get("cmdline") or [])
            if len(cmd) > 80:
                cmd = cmd[:77] + "..."
            lines.append(
                f"| {_cell(p['service'])} | {p['pid']} | {p.get('ppid', '?')} | "
                f"{format_cpu_list(p.get('cpu_affinity'))} | `{_cell(cmd)}` |"
            )
    else:
        lines.append("None found." if procs is not None else "Not collected (see warnings).")
    warnings = doc.get("warnings") or []
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"
