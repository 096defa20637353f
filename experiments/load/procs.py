"""The processes of a Locust run, on whichever host they run: the CPU guard that watches them
(psutil, about once a second) and how they are ended (their whole process group, bounded)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from typing import Any

import psutil

from experiments.protocol import GuardParams


class CpuGuard:
    """Samples the CPU of a set of root processes and their descendants."""

    def __init__(self, roots: list[psutil.Process], cores: int, params: GuardParams):
        self.roots = roots
        self.cores = max(1, cores)
        self.params = params
        self.samples: list[dict[str, Any]] = []
        self._prev: dict[int, tuple[float, float]] = {}
        self._t0 = time.time()
        self._run: list[dict[str, Any]] = []
        self.violation: str | None = None

    def _tree(self) -> list[psutil.Process]:
        procs = {}
        for root in self.roots:
            try:
                procs[root.pid] = root
                for child in root.children(recursive=True):
                    procs[child.pid] = child
            except psutil.Error:
                continue
        return list(procs.values())

    def sample(self) -> dict[str, Any]:
        now = time.time()
        per_proc: dict[str, float] = {}
        for proc in self._tree():
            try:
                with proc.oneshot():
                    ct = proc.cpu_times()
                    used = ct.user + ct.system
                    if proc.pid in self._prev:
                        prev_used, prev_t = self._prev[proc.pid]
                    else:  # first sight: average since the process was created, not 0
                        prev_used, prev_t = 0.0, proc.create_time()
            except psutil.Error:
                continue
            dt = now - prev_t
            if dt > 0.05:
                per_proc[str(proc.pid)] = round(max(0.0, used - prev_used) / dt * 100, 1)
            self._prev[proc.pid] = (used, now)
        total = round(sum(per_proc.values()), 1)
        s = {"t": round(now, 3), "total_percent": total, "processes": per_proc}
        self.samples.append(s)
        self._check(s)
        return s

    def _check(self, s: dict[str, Any]) -> None:
        p = self.params
        if s["t"] - self._t0 < p.grace_s:
            return
        over_total = s["total_percent"] > p.threshold * 100 * self.cores
        over_proc = max(s["processes"].values(), default=0.0) > p.threshold * 100
        if not (over_total or over_proc):
            self._run = []
            return
        self._run.append(s)
        needed = max(1, math.ceil(p.sustain_s / p.interval_s))
        if self.violation is None and len(self._run) >= needed:
            peak = max(x["total_percent"] for x in self._run)
            self.violation = (
                f"load generator CPU saturated: above {p.threshold:.0%} of its "
                f"{self.cores} core(s) (or of one core for a single Locust process) for "
                f"{len(self._run)} consecutive samples ({len(self._run) * p.interval_s:.0f} s), "
                f"peak {peak:.0f} %"
            )


def kill_group(proc: subprocess.Popen, grace_s: float = 8.0) -> None:
    """SIGTERM the process group led by proc (we started it with a new session), then
    SIGKILL whatever is left after grace_s."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
