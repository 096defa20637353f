#!/usr/bin/env python3
"""Read-back and clean-up of the lab's supervised processes (stdlib only, Linux /proc).

lab_procs.py programs --supervisorctl PATH --conf CONF NAME...
    One JSON object: for each supervisord program, its state, main pid and the CPU affinity
    (Cpus_allowed_list) of the main process and of every descendant (workers).
lab_procs.py sweep --run-dir DIR [--kill] [--timeout S]
    The processes that belong to the run dir (SCORING_LAB_RUN_DIR=DIR in their environment,
    or DIR in their command line); with --kill, SIGTERM them, then SIGKILL after the timeout.
    Prints {"found": [...], "left": [...]} (left empty = clean).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


# A copy of hardware/cpus.py's parsing, on purpose: Ansible copies this file alone to each host
# and runs it with the host's system Python (stdlib only), where the project is not installed.
def cpu_list(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return sorted(set(cpus))


def affinity(pid: int) -> list[int] | None:
    for line in _read(f"/proc/{pid}/status").decode(errors="replace").splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return cpu_list(line.split(":", 1)[1])
    return None


def cmdline(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace").strip()


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def parent(pid: int) -> int:
    stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
    try:
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return 0


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        children.setdefault(parent(pid), []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in sorted(children.get(pid, [])):
            found.append(child)
            todo.append(child)
    return found


def cmd_programs(args: argparse.Namespace) -> int:
    base = [args.supervisorctl, "-c", args.conf]
    result: dict[str, dict] = {}
    for name in args.names:
        status = subprocess.run(base + ["status", name], capture_output=True, text=True)
        fields = status.stdout.split()
        state = fields[1] if len(fields) > 1 and fields[0] == name else "UNKNOWN"
        out = subprocess.run(base + ["pid", name], capture_output=True, text=True).stdout.strip()
        pid = int(out) if out.isdigit() else 0
        tree = []
        if pid > 0:
            for member in [pid] + descendants(pid):
                cpus = affinity(member)
                if cpus is not None:
                    tree.append({"pid": member, "cpus": cpus, "cmd": cmdline(member)[:200]})
        result[name] = {
            "state": state,
            "pid": pid,
            "affinity": tree[0]["cpus"] if tree else [],
            "processes": tree,
        }
    json.dump(result, sys.stdout)
    return 0


def _belongs(pid: int, run_dir: str) -> bool:
    marker = f"SCORING_LAB_RUN_DIR={run_dir}".encode()
    if marker in _read(f"/proc/{pid}/environ").split(b"\0"):
        return True
    args = _read(f"/proc/{pid}/cmdline").split(b"\0")
    prefix = run_dir.rstrip("/").encode() + b"/"
    return any(arg == run_dir.encode() or arg.startswith(prefix) for arg in args)


def _ancestors() -> set[int]:
    seen, pid = set(), os.getpid()
    while pid > 0 and pid not in seen:
        seen.add(pid)
        pid = parent(pid)
    return seen


def members(run_dir: str) -> list[dict]:
    mine = _ancestors()
    return [
        {"pid": pid, "cmd": cmdline(pid)[:200]}
        for pid in all_pids()
        if pid not in mine and _belongs(pid, run_dir) and cmdline(pid)
    ]


def cmd_sweep(args: argparse.Namespace) -> int:
    found = left = members(args.run_dir)
    if args.kill and left:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc["pid"], sig)
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                left = members(args.run_dir)
                if not left:
                    break
                time.sleep(0.2)
            if not left:
                break
    json.dump({"found": found, "left": left}, sys.stdout)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    programs = commands.add_parser("programs")
    programs.add_argument("--supervisorctl", required=True)
    programs.add_argument("--conf", required=True)
    programs.add_argument("names", nargs="+")
    sweep = commands.add_parser("sweep")
    sweep.add_argument("--run-dir", required=True)
    sweep.add_argument("--kill", action="store_true")
    sweep.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    return {"programs": cmd_programs, "sweep": cmd_sweep}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
