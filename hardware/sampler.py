"""The resource sampler: one JSON line per interval until stopped.

Per-service counters are cumulative so that any window can be cut afterwards (summary.py takes
differences). Processes come and go during a run (gunicorn restarts workers), so the CPU time and
context switches last seen for a pid that has exited stay in its service's total: the totals never
go backwards. What a process did between its last sample and its exit (at most one interval) is
lost; a shorter interval makes that smaller.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import IO

import psutil

from hardware.labprocs import LabProcessFinder
from hardware.sockets import InetCounter

# Cumulative per-process counters, in this order.
COUNTERS = (
    "cpu_user_s",
    "cpu_system_s",
    "num_ctx_switches_voluntary",
    "num_ctx_switches_involuntary",
)


# Lab processes that are not services: their connections are not recorded (the load generator
# alone may hold hundreds, one per simulated user).
NOT_SERVICES = frozenset({"loadgen", "monitor"})


@dataclass
class _Seen:
    service: str
    counters: tuple[float, float, int, int]


class Sampler:
    """Builds sample dicts. Holds the state that makes service counters cumulative."""

    def __init__(self, run_dir: str | None = None) -> None:
        self.finder = LabProcessFinder(run_dir)
        self.sockets = InetCounter()
        # (pid, create_time) -> last counters seen for that process
        self._live: dict[tuple[int, float], _Seen] = {}
        # service -> counters of its processes that have exited
        self._dead: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0, 0])
        # The first psutil.cpu_percent() call only sets the baseline; prime it now so the first
        # sample reports the interval since construction.
        psutil.cpu_percent(percpu=True)

    def sample(self) -> dict:
        t = time.time()
        per_core_pct = psutil.cpu_percent(percpu=True)
        per_core_times = [c._asdict() for c in psutil.cpu_times(percpu=True)]
        net = psutil.net_io_counters()
        services = self._sample_services()
        own = os.times()
        return {
            "t": t,
            "cpu_percent_per_core": per_core_pct,
            "cpu_times_per_core": per_core_times,
            "net": {"bytes_sent": net.bytes_sent, "bytes_recv": net.bytes_recv},
            "services": services,
            # The sampler's own cost, so every file can show it did not disturb the measurement.
            "sampler_cpu_s": round(own.user + own.system, 3),
        }

    def _sample_services(self) -> dict:
        live: dict[tuple[int, float], _Seen] = {}
        rss: dict[str, int] = defaultdict(int)
        threads: dict[str, int] = defaultdict(int)
        pids: dict[str, list[int]] = defaultdict(list)
        for lab in self.finder.find():
            proc = lab.proc
            try:
                with proc.oneshot():
                    cpu = proc.cpu_times()
                    mem = proc.memory_info()
                    ctx = proc.num_ctx_switches()
                    nthreads = proc.num_threads()
            except psutil.Error:
                continue  # exited (its last counters move to _dead below) or unreadable
            # user/system only: children_* would count a reaped gunicorn worker a second time,
            # once through the master and once through the worker's own last sample.
            counters = (cpu.user, cpu.system, ctx.voluntary, ctx.involuntary)
            live[(proc.pid, lab.create_time)] = _Seen(lab.service, counters)
            rss[lab.service] += mem.rss
            threads[lab.service] += nthreads
            pids[lab.service].append(proc.pid)
        for key, seen in self._live.items():
            if key not in live:
                dead = self._dead[seen.service]
                for i, value in enumerate(seen.counters):
                    dead[i] += value
        self._live = live

        totals: dict[str, list[float]] = {s: list(c) for s, c in self._dead.items()}
        for seen in live.values():
            acc = totals.setdefault(seen.service, [0.0, 0.0, 0, 0])
            for i, value in enumerate(seen.counters):
                acc[i] += value

        connections = self.sockets.count({s: pids.get(s, []) for s in totals})
        # Which service process holds a connection to which (e.g. each scoring worker's pooled
        # keep-alive connection to a model worker): experiments/analysis/pinning.py.
        links = self.sockets.links(
            p for s, ps in pids.items() if s not in NOT_SERVICES for p in ps)
        out = {}
        for service in sorted(totals):
            acc = totals[service]
            out[service] = {
                "pids": sorted(pids.get(service, [])),
                "cpu_user_s": round(acc[0], 3),
                "cpu_system_s": round(acc[1], 3),
                "rss_bytes": rss.get(service, 0),
                "num_ctx_switches_voluntary": acc[2],
                "num_ctx_switches_involuntary": acc[3],
                "num_threads": threads.get(service, 0),
                "connections": connections[service],
            }
            if service not in NOT_SERVICES:
                # {"<pid>": ["local->peer", ...]}, only pids holding a connection to another
                # lab service process; absent from samples taken before it was recorded.
                out[service]["tcp"] = {
                    str(p): links[p] for p in sorted(pids.get(service, [])) if links.get(p)}
        return out


def run(
    out: IO[str],
    interval: float,
    run_dir: str | None = None,
    duration: float | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Append one JSON line per interval to out until stop is set or duration has elapsed.

    A last sample is taken when stopping, so the end of a measured window is always covered.
    Returns the number of lines written.
    """
    stop = stop or threading.Event()
    sampler = Sampler(run_dir)
    start = time.monotonic()
    deadline = None if duration is None else start + duration
    tick = 1
    written = 0
    while True:
        target = start + tick * interval
        if deadline is not None and target >= deadline - 1e-3:
            target = deadline
        stopped = stop.wait(max(0.0, target - time.monotonic()))
        sample = sampler.sample()
        # One line, one write, one flush: a killed sampler leaves at most a torn last line.
        out.write(json.dumps(sample, separators=(",", ":")) + "\n")
        out.flush()
        written += 1
        if stopped or (deadline is not None and time.monotonic() >= deadline):
            return written
        # Fixed-rate ticks (no drift); after a stall, skip the missed ticks instead of bursting.
        tick += 1
        missed = int((time.monotonic() - start) / interval) + 1
        tick = max(tick, missed)


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM (systemd, supervisor, Ansible) and SIGINT (Ctrl-C) end the sampler cleanly."""

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
