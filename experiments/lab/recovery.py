"""Before each capacity step, wait until the stack has recovered from the previous one.

Why: a step past the knee leaves a backlog behind. The committed experiment 3 run of
2026-12-01 had the async stack pass 160 req/s, then fail every later step down to 56.6 req/s
(p50 10 s) after one step at 320 req/s: each step started on the previous one's backlog and
measured it, not its own rate. A step's verdict must be about its rate alone, so the next step
starts only once the stack answers as it does when idle.

How: probes through the real path (one request at a time to the scoring endpoint, a new
connection each, from the runner on the load generator's cores), in groups of PROBES_PER_GROUP:
- the first wait of a search learns the stack's idle latency: groups until two in a row agree
  within STABLE_FRACTION or SLACK_MS (a stack still draining gets faster from group to group);
- every wait is over when a group answers without error with a median within
  max(tolerance x idle, idle + SLACK_MS);
- after a step that failed, the probes start only after `recovery_quiet_s` without load: with
  several workers, an idle one accepts the probes' connections while another still works
  through its backlog (the 2026-12-01 experiment 4 run: a hold 2.2 s after a failed step
  started with a 447 ms median for its first 2 s, then ran at 55 ms); the quiet time covers
  the longest a request can stay in the stack (model and Redis timeouts);
- a wait is bounded by `recovery_max_s`. A stack that has not recovered by then is restarted
  when the caller can (its `restart`, e.g. experiments/lab/renew.py) and waited for again;
  if it still has not, the record says so and the step is invalid (analysis/capacity.py).
  Just after a restart, the idle latency is learnt even above the search's bound: a stack
  that slow when idle fails every step on its own latency, a valid verdict (the committed
  experiment 6 run of 2026-12-01 had two such sync searches end invalid instead).
Each wait is written, probes and all, to the step's recovery.json (read back by
experiments/analysis/capacity.py).

Cost: one group (3 requests, 0.15-0.3 s) before a step on a stack that is already idle.
"""

from __future__ import annotations

import json
import math
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.analysis.capacity import RECOVERY_FILE

PROBES_PER_GROUP = 3
STABLE_FRACTION = 0.2  # two idle groups' medians within 20 % of each other
SLACK_MS = 10.0  # a fast stack's idle latency jitters by a few ms: never ask for less
PAUSE_S = 1.0  # between groups while waiting: the probes must not slow the drain down
MAX_PROBES_KEPT = 300


@dataclass
class Probe:
    """One scoring endpoint and the payload it is probed with."""

    url: str
    payload: Any
    timeout_s: float = 10.0

    def once(self) -> tuple[int, float]:
        """(HTTP status, 0 on a connection error or timeout; milliseconds)."""
        body = json.dumps(self.payload).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        except OSError:
            status = 0
        return status, (time.perf_counter() - start) * 1000


def probe_group(probe: Probe) -> tuple[bool, float, list[tuple[int, float]]]:
    """One group of sequential probes: (all answered 200, median ms, each (status, ms))."""
    results = [probe.once() for _ in range(PROBES_PER_GROUP)]
    return (all(status == 200 for status, _ in results),
            statistics.median(ms for _, ms in results), results)


@dataclass
class Waiter:
    """The recovery waits of one capacity search (its idle latency is learnt once)."""

    probe: Probe
    max_wait_s: float
    tolerance: float
    restart: Callable[[str], dict] | None = None
    idle_ms: float | None = None
    # A latency the idle stack must beat to be learnt as idle (the search's p99 bound): a
    # stack still slow after its load stopped is busy, not idle.
    max_idle_ms: float = float("inf")
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    probes: list[list[float]] = field(default_factory=list)

    def threshold_ms(self) -> float:
        assert self.idle_ms is not None
        return max(self.tolerance * self.idle_ms, self.idle_ms + SLACK_MS)

    def _group(self, started: float) -> tuple[bool, float]:
        ok, median, results = probe_group(self.probe)
        for status, ms in results:
            if len(self.probes) < MAX_PROBES_KEPT:
                self.probes.append([round(self.clock() - started, 3), status, round(ms, 2)])
        return ok, median

    def _wait(self, started: float, begin: float, fresh: bool = False) -> bool:
        """Probe groups from `begin` for at most max_wait_s; probe times from `started`.
        `fresh`: the services were just restarted, so they hold no backlog and a steady
        latency above max_idle_ms is their idle one (a stack slower than the bound when
        idle, e.g. sync calling a 200 ms model twice in sequence), not a busy stack."""
        deadline = begin + self.max_wait_s
        previous: float | None = None
        cap = math.inf if fresh else self.max_idle_ms
        while True:
            ok, median = self._group(started)
            if ok and self.idle_ms is None and previous is not None \
                    and max(median, previous) <= cap \
                    and abs(median - previous) <= max(STABLE_FRACTION * min(median, previous),
                                                      SLACK_MS):
                self.idle_ms = min(median, previous)
                return True
            if ok and self.idle_ms is not None and median <= self.threshold_ms():
                self.idle_ms = min(self.idle_ms, median)
                return True
            previous = median if ok else None
            left = deadline - self.clock()
            if left <= 0:
                return False  # the last group started by the deadline
            self.sleep(min(PAUSE_S, left))

    def wait(self, out_dir: Path, quiet_s: float = 0.0) -> dict[str, Any]:
        """Wait quiet_s, then until the stack is idle again (or the bound is spent), write
        the record to out_dir/recovery.json and return it."""
        self.probes = []
        started = self.clock()
        if quiet_s > 0:
            self.sleep(quiet_s)
        learning = self.idle_ms is None
        recovered = self._wait(started, self.clock())
        record: dict[str, Any] = {"learnt_idle": learning, "quiet_s": quiet_s}
        if not recovered and self.restart is not None:
            record["restart"] = self.restart(
                f"not recovered after {self.clock() - started:.0f} s of probes")
            recovered = self._wait(started, self.clock(), fresh=True)
        record.update(
            recovered=recovered, waited_s=round(self.clock() - started, 3),
            idle_ms=None if self.idle_ms is None else round(self.idle_ms, 2),
            threshold_ms=None if self.idle_ms is None else round(self.threshold_ms(), 2),
            tolerance=self.tolerance, max_wait_s=self.max_wait_s,
            probes_per_group=PROBES_PER_GROUP, probes=self.probes)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / RECOVERY_FILE).write_text(json.dumps(record, indent=1) + "\n")
        return record
