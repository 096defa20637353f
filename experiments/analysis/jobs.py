"""Job-queue runs, from the job clients' records and the sampled queue depth (pure; experiment 8).

A job record is one row of a job log (experiments/load/job_log.py). Everything here is computed
from records and depth samples alone:

- time to result: from a job's *scheduled* submit to the answer of the first poll that saw it
  done (what its client waited, a client behind its schedule included: the open model's
  response time, as for the in-line requests);
- ``summarise_jobs``: a step's jobs: offered, accepted, rejected (503 queue_full), ended done /
  failed / lost / past the deadline / unfinished, submit latency p50/p99, time to result
  p50/p99 (of the jobs done), throughput (jobs done per second of schedule), polls per job,
  whether the step meets the bound as a point estimate (time to result p99 within the job
  bound, the shared bound plus one poll interval, with at most ``max_error_fraction`` of its
  jobs not done), and its **verdict** at a stated confidence (experiments/analysis/tail.py, the
  capacity search's rule): a job not done within the bound (late, failed, refused, lost) is
  over it, and the step passes only when the share over it is confidently within 1 %, fails
  only when confidently above, and is undecided otherwise (at 95 %, a step of fewer than 299
  jobs cannot pass: a 15 s step of the sync queue's 1.6-9.3 jobs/s never can);
- ``queue_capacity``: over steps of rising rate, the highest that passed below the first that
  failed ("found"; "lower_bound" when none failed, "upper_bound" when none passed below a
  failure, "none" when nothing was decided; an undecided step is neither): a step sweep, not
  the capacity search (one step per rate, never measured again);
- ``job_windows``: per window of scheduled time: jobs submitted, rejected, done within the bound
  and the p99 time to result; per window of completion time: jobs done (throughput over time);
- the worker's side (``worker_split``, from the queue's own records of when each job was
  queued, started and ended: experiments/lab/job_times.py): submit to worker completion (from
  the scheduled submit, as the time to result), the wait in the queue, the work, and the lag of
  the first poll that saw the job done behind its completion;
- depth: ``read_depth`` (the sampler's CSV), ``depth_between`` (a window's samples, from its
  start), ``drain_s`` (from a burst's end until the depth is back at or under a threshold).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from experiments.analysis.tail import FAIL, PASS, UNDECIDED, tail_verdict
from experiments.analysis.timeline import percentile
from experiments.load.job_log import ACCEPTED_OUTCOMES, OUTCOMES


@dataclass(frozen=True)
class JobRecord:
    scheduled: float           # unix s
    submit_unix: float | None
    submit_ms: float | None
    submit_status: int
    outcome: str
    result_unix: float | None  # the answer of the poll that saw it end
    polls: int
    poll_errors: int = 0
    error: str = ""
    job_id: str = ""

    @property
    def accepted(self) -> bool:
        return self.outcome in ACCEPTED_OUTCOMES

    @property
    def done(self) -> bool:
        return self.outcome == "done"

    @property
    def ttr_ms(self) -> float | None:
        """Time to result, from the scheduled submit; None unless done."""
        if not self.done or self.result_unix is None:
            return None
        return (self.result_unix - self.scheduled) * 1000.0


def _float(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def read_jobs(paths: Iterable[Path]) -> list[JobRecord]:
    """Records of job logs (jobs_*.csv), sorted by scheduled time; a torn last line of a
    killed process, or a row with an unknown outcome, is skipped."""
    out = []
    for path in paths:
        with Path(path).open(newline="") as f:
            for r in csv.DictReader(f):
                if r.get("outcome") not in OUTCOMES:
                    continue
                try:
                    out.append(JobRecord(
                        float(r["scheduled_unix"]), _float(r["submit_unix"]),
                        _float(r["submit_ms"]), int(r["submit_status"] or 0), r["outcome"],
                        _float(r["result_unix"]), int(r["polls"] or 0),
                        int(r.get("poll_errors") or 0), r.get("error") or "",
                        r.get("job_id") or ""))
                except (KeyError, ValueError, TypeError):
                    continue
    out.sort(key=lambda x: x.scheduled)
    return out


@dataclass(frozen=True)
class JobSummary:
    jobs: int
    span_s: float
    offered_rps: float
    accepted: int
    outcomes: dict[str, int]      # every outcome, 0 when none
    throughput_rps: float         # jobs done per second of schedule
    good: int                     # done within the job bound
    submit_p50_ms: float | None
    submit_p99_ms: float | None
    ttr_p50_ms: float | None      # of the jobs done
    ttr_p99_ms: float | None
    polls_per_job: float | None   # of the accepted jobs
    poll_errors: int
    bound_ms: float
    meets_bound: bool             # the point estimate: p99 and the share not done
    verdict: str = UNDECIDED      # at `confidence`: pass, fail or undecided
    confidence: float = 0.95

    @property
    def rejected(self) -> int:
        return self.outcomes["rejected"]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rejected": self.rejected}


def summarise_jobs(records: Sequence[JobRecord], span_s: float, bound_ms: float,
                   max_error_fraction: float, confidence: float = 0.95) -> JobSummary:
    """``records`` (all scheduled within a span of span_s seconds) as one JobSummary; the step
    meets the bound (a point estimate) when its time to result p99 is within bound_ms and at
    most max_error_fraction of its jobs were not done; its verdict judges the share of jobs not
    done within bound_ms at `confidence` (an empty step is undecided)."""
    if span_s <= 0:
        raise ValueError(f"span_s = {span_s!r}: must be > 0")
    if not 0 <= max_error_fraction <= 1:
        raise ValueError(f"max_error_fraction = {max_error_fraction!r}: must be in [0, 1]")
    outcomes = dict.fromkeys(OUTCOMES, 0)
    for r in records:
        outcomes[r.outcome] += 1
    ttr = [t for r in records if (t := r.ttr_ms) is not None]
    submits = [r.submit_ms for r in records if r.submit_ms is not None and r.submit_status]
    accepted = [r for r in records if r.accepted]
    p99 = percentile(ttr, 99)
    not_done = len(records) - outcomes["done"]
    meets = bool(records) and p99 is not None and p99 <= bound_ms and (
        not_done <= max_error_fraction * len(records))
    good = sum(1 for t in ttr if t <= bound_ms)
    verdict = (tail_verdict(len(records) - good, len(records), 0.99, confidence).outcome
               if records else UNDECIDED)
    return JobSummary(
        jobs=len(records), span_s=span_s, offered_rps=len(records) / span_s,
        accepted=len(accepted), outcomes=outcomes, throughput_rps=outcomes["done"] / span_s,
        good=good,
        submit_p50_ms=percentile(submits, 50), submit_p99_ms=percentile(submits, 99),
        ttr_p50_ms=percentile(ttr, 50), ttr_p99_ms=p99,
        polls_per_job=(sum(r.polls for r in accepted) / len(accepted)) if accepted else None,
        poll_errors=sum(r.poll_errors for r in records), bound_ms=bound_ms,
        meets_bound=meets, verdict=verdict, confidence=confidence)


@dataclass(frozen=True)
class QueueCapacity:
    rps: float | None   # the highest step that passed; None when none did below a failure
    # "found": a confidently failed step above it; "lower_bound": none failed; "upper_bound":
    # none passed, a step failed (the capacity is below it); "none": no step was decided
    status: str
    failed_at_rps: float | None

    @property
    def figure(self) -> float | str | None:
        """As a headline shows it: the rate, '>= x' for a lower bound, '< x' for an upper
        bound, None for none."""
        if self.status == "found":
            return round(self.rps, 2)
        if self.status == "lower_bound":
            return f">= {self.rps:.2f}"
        if self.status == "upper_bound":
            return f"< {self.failed_at_rps:.2f}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "figure": self.figure}


def queue_capacity(steps: Sequence[tuple[float, str]]) -> QueueCapacity:
    """From (offered rate, verdict) per step: the highest rate that passed below the first that
    failed (steps are taken in rising rate; an undecided step neither passes nor fails)."""
    passed = None
    for rate, verdict in sorted(steps):
        if verdict == FAIL:
            return QueueCapacity(passed, "found" if passed is not None else "upper_bound", rate)
        if verdict == PASS:
            passed = rate
    return QueueCapacity(passed, "lower_bound" if passed is not None else "none", None)


@dataclass(frozen=True)
class JobWindow:
    t: float              # start, seconds from t0
    submitted: int        # jobs scheduled in it
    rejected: int
    good: int             # of those, done within the bound
    ttr_p99_ms: float | None
    completed: int        # jobs whose result was seen in it (throughput over time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def job_windows(records: Sequence[JobRecord], t0: float, t1: float, width_s: float,
                bound_ms: float) -> list[JobWindow]:
    """Windows of width_s from t0 (unix s) until t1."""
    if width_s <= 0:
        raise ValueError(f"width_s = {width_s!r}: must be > 0")
    n = max(0, math.ceil((t1 - t0) / width_s - 1e-9))
    by_sched: list[list[JobRecord]] = [[] for _ in range(n)]
    completed = [0] * n
    for r in records:
        k = math.floor((r.scheduled - t0) / width_s)
        if 0 <= k < n:
            by_sched[k].append(r)
        if r.done and r.result_unix is not None:
            k = math.floor((r.result_unix - t0) / width_s)
            if 0 <= k < n:
                completed[k] += 1
    out = []
    for k, rs in enumerate(by_sched):
        ttr = [t for r in rs if (t := r.ttr_ms) is not None]
        out.append(JobWindow(round(k * width_s, 6), len(rs),
                             sum(1 for r in rs if r.outcome == "rejected"),
                             sum(1 for t in ttr if t <= bound_ms), percentile(ttr, 99),
                             completed[k]))
    return out


# ------------------------------------------------------------------------ the worker's side

# beside a step's job logs (written by experiments/lab/job_times.py)
WORKER_TIMES_FILE = "worker_times.csv"
WORKER_TIMES_COLUMNS = ["job_id", "queued_unix", "started_unix", "ended_unix"]


def read_worker_times(path: Path) -> dict[str, tuple[float | None, float | None, float | None]]:
    """job_id -> (queued, started, ended) unix s of a worker_times.csv ({} without one)."""
    out = {}
    p = Path(path)
    if not p.exists():
        return out
    with p.open(newline="") as f:
        for r in csv.DictReader(f):
            try:
                out[r["job_id"]] = (_float(r["queued_unix"]), _float(r["started_unix"]),
                                    _float(r["ended_unix"]))
            except (KeyError, ValueError):
                continue
    return out


def worker_split(records: Sequence[JobRecord],
                 times: dict[str, tuple[float | None, float | None, float | None]],
                 ) -> dict[str, Any]:
    """Of the done jobs the queue still had records of: p50/p99 (ms) of submit to worker
    completion (from the scheduled submit), the wait in the queue (queued -> started), the
    work (started -> ended) and the poll's lag (ended -> the first poll that saw it done)."""
    parts: dict[str, list[float]] = {"completion": [], "queue_wait": [], "work": [],
                                     "poll_lag": []}
    found = 0
    for r in records:
        q, started, ended = times.get(r.job_id, (None, None, None))
        if not r.done or ended is None or r.result_unix is None:
            continue
        found += 1
        parts["completion"].append((ended - r.scheduled) * 1000)
        parts["poll_lag"].append((r.result_unix - ended) * 1000)
        if started is not None:
            parts["work"].append((ended - started) * 1000)
            if q is not None:
                parts["queue_wait"].append((started - q) * 1000)
    out: dict[str, Any] = {"jobs": found}
    for name, values in parts.items():
        out[f"{name}_p50_ms"] = percentile(values, 50)
        out[f"{name}_p99_ms"] = percentile(values, 99)
    return out


# --------------------------------------------------------------------------- queue depth


def read_depth(path: Path, arch: str) -> list[tuple[float, int]]:
    """(unix s, jobs waiting) of `arch`'s column of the sampler's CSV; a sample Redis did
    not answer (an empty cell) is left out."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    with p.open(newline="") as f:
        for r in csv.DictReader(f):
            try:
                t, v = float(r["t_unix"]), r.get(arch)
                if v not in (None, ""):
                    out.append((t, int(v)))
            except (KeyError, ValueError):
                continue
    return out


def depth_between(samples: Sequence[tuple[float, int]], t0: float,
                  t1: float) -> list[tuple[float, int]]:
    """The samples in [t0, t1], their times in seconds from t0."""
    return [(round(t - t0, 3), d) for t, d in samples if t0 <= t <= t1]


def drain_s(samples: Sequence[tuple[float, int]], after: float, threshold: int) -> float | None:
    """Seconds from `after` (unix s, a burst's end) until the first sample at or after it
    with at most `threshold` jobs waiting (None: not within the samples)."""
    for t, d in samples:
        if t >= after and d <= threshold:
            return t - after
    return None


def depth_stats(samples: Sequence[tuple[float, int]]) -> dict[str, float | int | None]:
    if not samples:
        return {"mean": None, "max": None, "samples": 0}
    depths = [d for _, d in samples]
    return {"mean": sum(depths) / len(depths), "max": max(depths), "samples": len(depths)}
