"""Helpers for the Ansible deploy tests: run a playbook, parse its recap, read /proc.

Not a test module (no ``test_`` prefix); the deploy tests import it from their directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = ROOT / "ansible"
IN_CI = os.environ.get("CI") == "true"
# What a host's app is made of: the lab role's lab_source_entries, read from its defaults.
SOURCE_ENTRIES = yaml.safe_load((ANSIBLE_DIR / "roles/lab/defaults/main.yml").read_text())[
    "lab_source_entries"
]
HTTP_SERVICES = ("model-sync", "model-async", "scoring-sync", "scoring-async")
# The job queue's workers (roles/queue_worker): supervised and pinned, no HTTP port.
QUEUE_SERVICES = ("queue-sync", "queue-async")
PROBE_BODY = b"[5.1,3.5,1.4,0.2]"

RECAP_LINE = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def require(condition: bool, reason: str) -> None:
    """Skip when a prerequisite is missing, except in CI, where that is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI (CI=true): {reason}")
    pytest.skip(reason)


def tool(name: str) -> str:
    """An executable of the Python env running the tests (ansible-playbook, ansible-lint)."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    require(found is not None, f"{name} is not installed in the test environment")
    return str(found)


def snapshot_sources(dest: Path) -> Path:
    """Copy the app's sources, so edits made in the work tree during a test do not count as
    changes between the two deploys of the idempotence check."""
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for entry in SOURCE_ENTRIES:
        src = ROOT / entry
        if src.is_dir():
            shutil.copytree(src, dest / entry, ignore=ignore)
        else:
            (dest / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / entry)
    return dest


@dataclass
class PlaybookRun:
    returncode: int
    output: str
    log: Path

    def recap(self) -> dict[str, dict[str, int]]:
        tail = self.output.rsplit("PLAY RECAP", 1)[-1]
        return {
            m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
            for m in RECAP_LINE.finditer(tail)
        }

    def explain(self) -> str:
        return f"ansible-playbook exited {self.returncode}; log {self.log}; last lines:\n" + (
            "\n".join(self.output.splitlines()[-60:])
        )


def ansible_env(state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        LAB_STATE_DIR=str(state_dir),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_LOCAL_TEMP=str(state_dir / "ansible-tmp"),
        PYTHONUNBUFFERED="1",
    )
    return env


def run_playbook(
    playbook: str,
    log: Path,
    state_dir: Path,
    extra_vars: dict | None = None,
    inventory: Path | None = None,
    args: tuple[str, ...] = (),
    timeout: float = 600,
) -> PlaybookRun:
    cmd = [tool("ansible-playbook"), playbook]
    if inventory is not None:
        cmd += ["-i", str(inventory)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    cmd += list(args)
    with open(log, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.run(
            cmd,
            cwd=ANSIBLE_DIR,
            env=ansible_env(state_dir),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    return PlaybookRun(proc.returncode, log.read_text(errors="replace"), log)


def load_cpu_filters():
    """The inventory's CPU filters (ansible/filter_plugins/lab_cpus.py), imported by path."""
    path = ANSIBLE_DIR / "filter_plugins" / "lab_cpus.py"
    spec = importlib.util.spec_from_file_location("lab_cpus_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- /proc ---------------------------------------------------------------------------------


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def cpus_allowed(pid: int) -> list[int]:
    for line in _read(f"/proc/{pid}/status").decode().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return load_cpu_filters().lab_cpu_list(line.split(":", 1)[1].strip())
    raise AssertionError(f"no process {pid}")


def environ(pid: int) -> dict[str, str]:
    pairs = (item.partition(b"=") for item in _read(f"/proc/{pid}/environ").split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _read(f"/proc/{name}/stat").decode(errors="replace")
            if ")" in stat:
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_dir_processes(run_dir: Path) -> list[tuple[int, str]]:
    """Processes that belong to a run dir: SCORING_LAB_RUN_DIR in their environment, or the
    run dir in their command line (supervisord, the venv's python)."""
    marker = f"SCORING_LAB_RUN_DIR={run_dir}".encode()
    prefix = str(run_dir).rstrip("/").encode() + b"/"
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        args = _read(f"/proc/{name}/cmdline").split(b"\0")
        env = _read(f"/proc/{name}/environ").split(b"\0")
        if marker in env or any(a.startswith(prefix) for a in args):
            found.append((int(name), b" ".join(args).decode(errors="replace")[:160]))
    return found


def kill_run_dir_processes(run_dir: Path) -> None:
    """Last-resort cleanup: SIGKILL what a failed test left of its own run dir, by pid."""
    for pid, _ in run_dir_processes(run_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- HTTP ----------------------------------------------------------------------------------


def get_json(url: str, timeout: float = 5) -> tuple[int, object]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, json.loads(response.read())


def post_json(url: str, body: bytes = PROBE_BODY, timeout: float = 10) -> tuple[int, object]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, json.loads(response.read())


def predict_path(service: str) -> str:
    return "/api/v1/ml/sync/predict" if service.endswith("-sync") else "/api/v1/ml/async/predict"


def wait_gone(run_dir: Path, timeout: float = 15) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    left = run_dir_processes(run_dir)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = run_dir_processes(run_dir)
    return left
