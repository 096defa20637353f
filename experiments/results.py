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
import json
import os
import re
import subprocess
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.metadata import collect_git, collect_metadata

FORMAT_VERSION = 1
RUN_NAME_RE = re.compile(r"^(\d{8}T\d{6}Z)_(.+)$")


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
