"""results/README.md: every run folder with its status, validity and headline, from its
manifest (the headline its report code derived: experiments.experiment.Experiment.rebuild).
A run whose manifest names runs it supersedes (`supersedes`, recorded at `run --supersedes`)
marks them superseded here; their folders stay as they are."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from experiments.results import RUN_NAME_RE


def _fmt(v: Any) -> str:
    if isinstance(v, float):  # 3 significant digits below 10 (a ratio 1.08 is not "1.1")
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    if v is None:
        return "-"
    if isinstance(v, dict) and "median" in v and "values" in v:
        # a figure over repeats (experiments.analysis.repeat_figures): median and spread
        cv = v.get("cv")
        return (f"{_fmt(v['median'])} (median of {v.get('n')}"
                + (f", CV {cv:.0%}{' unstable' if v.get('unstable') else ''}"
                   if isinstance(cv, float) else "") + ")")
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return "/".join(_fmt(x) for x in v)
    return str(v)


def headline_text(headline: dict[str, Any]) -> str:
    """One line of a headline dict ({arch: {metric: value}} or flat)."""
    if not headline:
        return ""
    parts = []
    for k, v in headline.items():
        parts.append(f"**{k}**: {_fmt(v)}" if isinstance(v, dict) else f"{k}: {_fmt(v)}")
    return "; ".join(parts).replace("|", "/")


def run_folders(results_dir: str | Path) -> list[Path]:
    """Every run folder in results_dir (named `<UTC stamp>_...`, with a manifest), by name,
    i.e. by time: the folders the index lists and `report --all` rebuilds."""
    return sorted(p for p in Path(results_dir).iterdir()
                  if p.is_dir() and RUN_NAME_RE.match(p.name) and (p / "manifest.json").exists())


def superseded_by(results_dir: Path) -> dict[str, list[str]]:
    """Run folder name -> the complete runs whose manifests say they supersede it."""
    out: dict[str, list[str]] = {}
    for d in run_folders(results_dir):
        try:
            m = json.loads((d / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        if m.get("status") == "complete":
            for old in m.get("supersedes") or []:
                out.setdefault(old, []).append(d.name)
    return out


def update_index(results_dir: str | Path) -> Path:
    """Regenerate results_dir/README.md: every run folder (sorted by name, i.e. time) with
    its status, validity and headline numbers from its manifest."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    superseded = superseded_by(results_dir)
    for d in sorted(p for p in results_dir.iterdir() if p.is_dir() and RUN_NAME_RE.match(p.name)):
        mpath = d / "manifest.json"
        try:
            m = json.loads(mpath.read_text())
        except (OSError, ValueError) as e:
            rows.append(
                f"| [{d.name}]({d.name}/) | unreadable manifest ({type(e).__name__}) | | | | |"
            )
            continue
        status = m.get("status", "?")
        if status != "complete":
            status = f"**{status}**"
            if m.get("interrupted_reason"):
                status += f" ({m['interrupted_reason']})".replace("|", "/")
        valid = m.get("validity", {})
        validity = (
            "valid"
            if valid.get("valid", True)
            else f"**INVALID** ({len(valid.get('reasons', []))} reasons)"
        )
        if d.name in superseded:
            status += " (superseded by " + ", ".join(
                f"[{n}]({n}/)" for n in superseded[d.name]) + ")"
        report = f" [report]({d.name}/report.md)" if (d / "report.md").exists() else ""
        rows.append(
            f"| [{d.name}]({d.name}/){report} | {m.get('experiment', '')} | "
            f"{m.get('profile') or ''} | {status} | {validity} | "
            f"{headline_text(m.get('headline') or {})} |"
        )
    text = "\n".join(
        [
            "# Results",
            "",
            "One folder per run (`<UTC time>_<experiment>_<topology>_<git sha>`), never",
            "overwritten. Each holds `manifest.json` (versioned record), `raw/` (Locust CSVs,",
            "resource samples, hardware reports) and a `report.md` derived from them. This index",
            "is regenerated on each run; incomplete or invalid runs are marked in bold. Each",
            "headline is the one its report derives: `make report-all` rebuilds every run's",
            "report, plots and manifest headline from its raw data, then this index.",
            "Commit a run with `git add results/<run>`: bulky files that can be rebuilt or that",
            "repeat other formats (Locust's and the profilers' HTML, yappi's .prof/.callgrind)",
            "stay in the folder but out of git (see .gitignore).",
            "",
            "| Run | Experiment | Profile | Status | Validity | Headline |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    out = results_dir / "README.md"
    tmp = out.with_name(".README.md.tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    return out
