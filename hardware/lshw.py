"""Run lshw for the full hardware inventory (JSON for machines, HTML for people).

lshw is optional: a missing or failing lshw leaves a status string and warnings, never an abort,
because a report without the inventory is still worth more than no report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

TIMEOUT_S = 60.0

# (output file, lshw option)
OUTPUTS = (("lshw.json", "-json"), ("lshw.html", "-html"))


@dataclass
class LshwResult:
    status: str  # "ok" | "missing" | "failed: <reason>"
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


def run_lshw(out_dir: Path, timeout: float = TIMEOUT_S) -> LshwResult:
    """Write lshw.json and lshw.html into out_dir; return the status and any warnings."""
    exe = shutil.which("lshw")
    if exe is None:
        return LshwResult("missing", ["lshw: not found on PATH; no hardware inventory"])
    result = LshwResult("ok")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        # Without root lshw cannot read DMI and some buses; the files are still useful.
        result.warnings.append("lshw: not run as root, its output may be incomplete")
    failures: list[str] = []
    for filename, option in OUTPUTS:
        try:
            proc = subprocess.run([exe, option], capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            failures.append(f"lshw {option} timed out after {timeout:g} s")
            continue
        except OSError as exc:
            failures.append(f"lshw {option}: {exc}")
            continue
        if proc.returncode != 0:
            err = _first_line(proc.stderr.decode(errors="replace"))
            failures.append(
                f"lshw {option} exited with {proc.returncode}" + (f": {err}" if err else "")
            )
            continue
        if option == "-json":
            # Some lshw releases emitted invalid JSON; keep the bytes for a human but say so.
            try:
                json.loads(proc.stdout)
            except ValueError as exc:
                failures.append(f"lshw -json output is not valid JSON ({exc})")
        (out_dir / filename).write_bytes(proc.stdout)
        result.files.append(filename)
    if failures:
        result.status = "failed: " + "; ".join(failures)
        result.warnings.extend(f"lshw: {f}" for f in failures)
    return result
