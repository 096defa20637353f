"""What a run records about where it ran: the git commit and its dirty flag, the lock files'
hashes, Python and the key packages' versions, the host. Many small `collect_<source>()`
functions (pyperf's habit); each may fail alone and leave a warning in the manifest instead of
aborting the run."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.constants import REPO_ROOT

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


