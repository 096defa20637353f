"""Find the processes that belong to the lab.

Every lab service is started with ``SCORING_LAB_SERVICE=<name>`` in its environment (and
``SCORING_LAB_RUN_DIR=<dir>`` to tell runs apart). Labelling by environment, not by command line,
is what survives gunicorn forking and restarting workers: a forked worker inherits the variables,
whatever its process title says.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

ENV_SERVICE = "SCORING_LAB_SERVICE"
ENV_RUN_DIR = "SCORING_LAB_RUN_DIR"

# A process may exec after it was first seen (supervisord and `env VAR=x cmd` fork, then exec with
# the lab variables). A "not a lab process" verdict is therefore re-checked while the process is
# this young, so that the short window between fork and exec cannot hide a service for good.
RECHECK_YOUNGER_THAN_S = 10.0


@dataclass(frozen=True)
class LabProcess:
    proc: psutil.Process
    service: str
    run_dir: str | None
    create_time: float

    @property
    def pid(self) -> int:
        return self.proc.pid


def _same_dir(a: str | None, b: str) -> bool:
    # Trailing slashes and "a/./b" are the same directory; anything subtler (symlinks) is not
    # resolved on purpose: the run dir is an opaque label set by the runner.
    return a is not None and os.path.normpath(a) == os.path.normpath(b)


def _label(proc: psutil.Process, run_dir: str | None) -> tuple[str, str | None] | None:
    """(service, run_dir) if the process is a lab process matching the filter, else None.

    Raises psutil.Error when the environment cannot be read (gone, zombie, access denied).
    """
    env = proc.environ()
    service = env.get(ENV_SERVICE)
    if not service:
        return None
    proc_run_dir = env.get(ENV_RUN_DIR)
    if run_dir is not None and not _same_dir(proc_run_dir, run_dir):
        return None
    return service, proc_run_dir


class LabProcessFinder:
    """Discovers lab processes, reading each process's environment once per (pid, create_time).

    Reading /proc/<pid>/environ for every process on every sample would dominate the sampler's
    own cost, so verdicts are cached. A cache entry is dropped as soon as its pid is missing from a
    listing; for lab processes the create time is also checked on every call, so a reused pid is
    never mistaken for the old service. For other pids, reuse would need the pid space to wrap
    within one sampling interval, which we accept.
    """

    def __init__(self, run_dir: str | None = None) -> None:
        self.run_dir = run_dir
        # pid -> (create_time, LabProcess or None when it is not a lab process)
        self._cache: dict[int, tuple[float, LabProcess | None]] = {}

    def find(self) -> list[LabProcess]:
        now = time.time()
        pids = psutil.pids()
        alive = set(pids)
        for pid in list(self._cache):
            if pid not in alive:
                del self._cache[pid]
        found: list[LabProcess] = []
        for pid in pids:
            entry = self._cache.get(pid)
            if entry is not None:
                create_time, lab = entry
                if lab is None:
                    if now - create_time > RECHECK_YOUNGER_THAN_S:
                        continue
                elif lab.proc.is_running():
                    found.append(lab)
                    continue
            lab = self._inspect(pid)
            if lab is not None:
                found.append(lab)
        return found

    def _inspect(self, pid: int) -> LabProcess | None:
        # Any failure is cached as "not a lab process": another user's process (AccessDenied), a
        # zombie, a kernel thread (whose environ read fails with ESRCH on some kernels). A pid that
        # really exited leaves the listing and its entry goes with it; without this cache the
        # ~60 kernel threads of a small VM alone cost ~10 ms of CPU per sample.
        try:
            proc = psutil.Process(pid)
            create_time = proc.create_time()
        except psutil.Error:
            self._cache[pid] = (0.0, None)
            return None
        try:
            label = _label(proc, self.run_dir)
        except psutil.Error:
            label = None
        lab = None
        if label is not None:
            lab = LabProcess(proc=proc, service=label[0], run_dir=label[1], create_time=create_time)
        self._cache[pid] = (create_time, lab)
        return lab


def find_lab_processes(run_dir: str | None = None) -> list[LabProcess]:
    """One-shot discovery (for reports); the sampler keeps a LabProcessFinder instead."""
    return LabProcessFinder(run_dir).find()
