"""Versioned result folders: one per run, never reused or overwritten.

    run = new_run_folder(results_dir, "experiment-3", "local", git_sha)
    with run.recording():              # an exception or Ctrl-C leaves status "incomplete"
        run.update(profile="quick", protocol=protocol.to_dict(), arrival="spread", topology={...})
        out = run.locust_dir("load_test", "sync")          # raw/locust/load_test/sync/
        ... run_locust(..., out) ...
        run.add_scenario({...})
        run.complete(headline={...})
    update_index(results_dir)

Folder name: `YYYYMMDDTHHMMSSZ_<experiment>_<topology>_<sha>` (sorts by time). Layout:

    manifest.json   report.md   *.png
    raw/locust/<scenario>/<arch>/   raw/resources/   raw/hardware/<host>/   raw/profiles/

manifest.json (`format_version` 1) is written at creation with status "incomplete" and
rewritten atomically (temp file + os.replace) on every update. Metadata comes from small
`collect_<source>()` functions; each failing one leaves a warning instead of aborting.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.constants import REPO_ROOT

FORMAT_VERSION = 1
KEY_PACKAGES = (
    "flask",
    "gunicorn",
    "meinheld",
    "fastapi",
    "uvicorn",
    "httpx",
    "redis",
    "locust",
    "greenlet",
    "psutil",
)
_NAME_RE = re.compile(r"^(\d{8}T\d{6}Z)_(.+)$")


def slug(text: str) -> str:
    """Safe, underscore-free name part (underscores separate the folder name's fields)."""
    s = re.sub(r"[^A-Za-z0-9.-]+", "-", str(text)).strip("-")
    return s or "unknown"


def _part(text: str) -> str:
    """Safe directory name part (scenario, architecture, host): underscores kept."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")
    return s or "unknown"


def utc_stamp(when: float | None = None) -> str:
    t = dt.datetime.fromtimestamp(time.time() if when is None else when, tz=dt.UTC)
    return t.strftime("%Y%m%dT%H%M%SZ")


def iso(when: float | None = None) -> str:
    t = dt.datetime.fromtimestamp(time.time() if when is None else when, tz=dt.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file in the same directory, fsync, then os.replace."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ------------------------------------------------------------------ metadata collectors


def _run(cmd: list[str], cwd: Path) -> str:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, check=True, timeout=20
    ).stdout.strip()


def collect_git(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """The commit the run measured, and whether tracked code differs from it. results/ is the
    lab's own output (a run updates the index there): a change there does not make the code
    dirty, else every run after the first would say so."""
    commit = _run(["git", "rev-parse", "HEAD"], repo)
    status = _run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                   ":(exclude)results"], repo)
    changed = [line.split(maxsplit=1)[1] for line in status.splitlines() if line.strip()]
    return {
        "git_commit": commit,
        "git_short": commit[:8],
        "git_dirty": bool(changed),
        "git_dirty_paths": changed[:50],
        "git_branch": _run(["git", "rev-parse", "--abbrev-ref", "HEAD"], repo),
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def collect_uv_lock(repo: Path = REPO_ROOT) -> dict[str, Any]:
    return {"uv_lock_sha256": _sha256(repo / "uv.lock")}


def collect_flake_lock(repo: Path = REPO_ROOT) -> dict[str, Any]:
    return {"flake_lock_sha256": _sha256(repo / "flake.lock")}


def collect_python(repo: Path = REPO_ROOT) -> dict[str, Any]:
    return {
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
    }


def collect_packages(repo: Path = REPO_ROOT) -> dict[str, Any]:
    versions, missing = {}, []
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    out: dict[str, Any] = {"packages": versions}
    if missing:
        out["packages_missing"] = missing
    return out


def collect_host(repo: Path = REPO_ROOT) -> dict[str, Any]:
    u = platform.uname()
    return {
        "hostname": socket.gethostname(),
        "kernel": u.release,
        "os": u.system,
        "machine": u.machine,
    }


COLLECTORS: tuple[Callable[[Path], dict[str, Any]], ...] = (
    collect_git,
    collect_uv_lock,
    collect_flake_lock,
    collect_python,
    collect_packages,
    collect_host,
)


def collect_metadata(repo: Path = REPO_ROOT) -> tuple[dict[str, Any], list[str]]:
    """Run every collector; a failing one adds a warning and the others still run."""
    meta: dict[str, Any] = {}
    warnings: list[str] = []
    for collect in COLLECTORS:
        try:
            meta.update(collect(repo))
        except Exception as e:  # noqa: BLE001 - each collector may fail alone
            warnings.append(f"{collect.__name__} failed: {type(e).__name__}: {e}")
    return meta, warnings


# ------------------------------------------------------------------------ run folder


@dataclass
class RunFolder:
    path: Path
    manifest: dict[str, Any]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def raw(self) -> Path:
        return self.path / "raw"

    def locust_dir(self, scenario: str, arch: str) -> Path:
        d = self.raw / "locust" / _part(scenario) / _part(arch)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def resources_dir(self) -> Path:
        return self.raw / "resources"

    def hardware_dir(self, host: str) -> Path:
        d = self.raw / "hardware" / _part(host)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def profiles_dir(self) -> Path:
        return self.raw / "profiles"

    def rel(self, p: str | Path) -> str:
        return os.path.relpath(p, self.path)

    # manifest updates, each one written atomically
    def _save(self) -> None:
        self.manifest["updated_at"] = iso()
        write_json_atomic(self.manifest_path, self.manifest)

    def update(self, **fields: Any) -> None:
        """Set top-level manifest fields and save."""
        with self._lock:
            self.manifest.update(fields)
            self._save()

    def add_scenario(self, entry: dict[str, Any]) -> None:
        """Append a finished scenario: {name, arch, started_at, ended_at, params, locust,
        valid, reasons, ...}; an invalid one also invalidates the run."""
        with self._lock:
            self.manifest.setdefault("scenarios", []).append(entry)
            if entry.get("valid") is False:
                reasons = entry.get("reasons") or ["invalid"]
                self._invalidate([f"{entry.get('name')}/{entry.get('arch')}: {r}" for r in reasons])
            self._save()

    def set_breaking_point(self, arch: str, bp: dict[str, Any]) -> None:
        with self._lock:
            self.manifest.setdefault("breaking_points", {})[arch] = bp
            self._save()

    def _invalidate(self, reasons: list[str]) -> None:
        v = self.manifest.setdefault("validity", {"valid": True, "reasons": []})
        v["valid"] = False
        for r in reasons:
            if r not in v["reasons"]:
                v["reasons"].append(r)

    def invalidate(self, *reasons: str) -> None:
        with self._lock:
            self._invalidate(list(reasons))
            self._save()

    def warn(self, message: str) -> None:
        with self._lock:
            self.manifest.setdefault("warnings", []).append(message)
            self._save()

    def complete(self, headline: dict[str, Any] | None = None) -> None:
        """Mark the run complete (only at the very end)."""
        with self._lock:
            if headline is not None:
                self.manifest["headline"] = headline
            self.manifest["status"] = "complete"
            self.manifest["ended_at"] = iso()
            self._save()

    def rebuilt(self, headline: dict[str, Any]) -> None:
        """A complete run's report rebuilt from its raw data (``python -m experiments
        report``): its headline replaces the one the run's own report code recorded, so the
        manifest and the results index say what the report says; when, and with which code,
        is recorded beside it. An incomplete run has no headline and gets none."""
        with self._lock:
            if self.manifest.get("status") != "complete":
                return
            try:
                git = collect_git()
                code = git["git_short"] + ("-dirty" if git["git_dirty"] else "")
            except (OSError, subprocess.SubprocessError):
                code = None  # a copy of the lab without git: the time alone
            self.manifest["headline"] = headline
            self.manifest["report_rebuilt"] = {"at": iso(), "code": code}
            self._save()

    def mark_interrupted(self, reason: str) -> None:
        """Keep status "incomplete" and record when and why the run stopped."""
        with self._lock:
            self.manifest["status"] = "incomplete"
            self.manifest["interrupted_at"] = iso()
            self.manifest["interrupted_reason"] = reason
            self._save()

    @contextlib.contextmanager
    def recording(self) -> Iterator[RunFolder]:
        """Context: any exception (KeyboardInterrupt included) marks the run interrupted,
        keeps what was measured, and propagates."""
        try:
            yield self
        except BaseException as e:
            reason = (
                "interrupted by the user (KeyboardInterrupt)"
                if isinstance(e, KeyboardInterrupt)
                else f"{type(e).__name__}: {e}"
            )
            self.mark_interrupted(reason)
            with contextlib.suppress(Exception):
                (self.path / "interrupted.txt").write_text("".join(traceback.format_exception(e)))
            raise


def scenario_entry(run: RunFolder, scenario: Any, arch: str, result: Any,
                   **extra: Any) -> dict[str, Any]:
    """The manifest entry of a finished scenario run (for RunFolder.add_scenario):
    {name, arch, started_at, ended_at (ISO), started_at_unix, ended_at_unix, params,
    locust: LocustResult summary with its dir relative to the folder, valid, reasons}.
    `scenario` is a protocol.Scenario, `result` a load.run.LocustResult; extra keys are
    added as they are (e.g. breaking_point_users for max_performance)."""
    summary = result.to_dict()
    summary["dir"] = run.rel(result.out_dir)
    return {
        "name": scenario.name,
        "arch": arch,
        "started_at": iso(result.started_at),
        "ended_at": iso(result.ended_at),
        "started_at_unix": result.started_at,
        "ended_at_unix": result.ended_at,
        "params": scenario.to_dict(),
        "arrival": result.arrival,
        "locust": summary,
        "valid": result.valid,
        "reasons": list(result.reasons),
        **extra,
    }


def run_folder_name(
    experiment: str, topology_label: str, git_sha: str, when: float | None = None
) -> str:
    return f"{utc_stamp(when)}_{slug(experiment)}_{slug(topology_label)}_{slug(git_sha)[:12]}"


def new_run_folder(
    results_dir: str | Path,
    experiment: str,
    topology_label: str,
    git_sha: str | None = None,
    *,
    when: float | None = None,
    collect: bool = True,
) -> RunFolder:
    """Create `<results_dir>/<UTC stamp>_<experiment>_<topology>_<sha>` with its raw/
    layout and an "incomplete" manifest. Fails (FileExistsError) if the folder exists: a
    run folder is never reused. git_sha None: the current commit's short sha."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    meta, warnings = collect_metadata() if collect else ({}, [])
    sha = git_sha or meta.get("git_short") or "nogit"
    started = time.time() if when is None else when
    path = results_dir / run_folder_name(experiment, topology_label, sha, started)
    try:
        os.mkdir(path)  # atomic: exactly one creator wins
    except FileExistsError:
        raise FileExistsError(
            f"result folder {path} already exists; a run folder is never "
            "reused or overwritten (wait a second and run again)"
        ) from None
    for sub in ("locust", "resources", "hardware", "profiles"):
        (path / "raw" / sub).mkdir(parents=True)
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": path.name,
        "experiment": experiment,
        "topology_label": topology_label,
        "status": "incomplete",
        "started_at": iso(started),
        "started_at_unix": started,
        "metadata": meta,
        "metadata_warnings": warnings,
        "profile": None,
        "protocol": None,
        "arrival": None,
        "topology": {},
        "scenarios": [],
        "breaking_points": {},
        "headline": {},
        "validity": {"valid": True, "reasons": []},
        "warnings": [],
    }
    run = RunFolder(path, manifest)
    run._save()
    return run


def open_run_folder(path: str | Path) -> RunFolder:
    """An existing run folder (for re-reporting or finishing by a caller)."""
    path = Path(path)
    return RunFolder(path, json.loads((path / "manifest.json").read_text()))


# ---------------------------------------------------------------------------- index


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
                  if p.is_dir() and _NAME_RE.match(p.name) and (p / "manifest.json").exists())


def update_index(results_dir: str | Path) -> Path:
    """Regenerate results_dir/README.md: every run folder (sorted by name, i.e. time) with
    its status, validity and headline numbers from its manifest."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for d in sorted(p for p in results_dir.iterdir() if p.is_dir() and _NAME_RE.match(p.name)):
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
