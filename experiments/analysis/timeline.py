"""Per-request timelines of an open-model run under overload or a fault (pure; experiment 9).

A record is one request of the load generator's log (experiments/load/locustfile.py): when it
was scheduled, sent and answered, its status and error text. Everything here is computed from
records alone:

- ``classify``: what happened to a request, one kind out of KINDS: ``ok``; ``502`` (the model
  API unreachable from the scoring handler); ``503`` (admission
  control's answers, or Redis unavailable), ``504`` (the model call's deadline), other HTTP
  errors (``other``); ``refused`` (no connection: never accepted); ``reset`` (the connection
  closed or reset after the request was sent); ``client_timeout`` (no answer within the
  client's timeout); ``unfinished`` (still unanswered when the run ended); ``wrong_answer``
  (HTTP 200 without a numeric answer).
- ``lost``: accepted and never answered: reset, client_timeout, unfinished. ``wrongly``:
  wrong_answer. Both must be 0 (issue 25).
- goodput: answers within the latency bound per second, a request's latency counted from its
  scheduled time (response time, not service time: a queue before the send is the system's).
- ``windows``: per window of arrival (scheduled) time: offered, goodput, errors by kind, p50
  and p99 of the answers served in it.
- ``fault_effect``: time to detect (the first failed answer to a request scheduled after the
  fault started, or answer later than ``tolerance`` x the pre-fault p99 to one scheduled
  while it was on, when its client saw it: a fault that fails nothing, a slower model, shows
  as latency), time to recover (from the fault's end to the first window from which every
  window is again error-free with its p99 within ``tolerance`` x the pre-fault p99), lost
  and wrong answers.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("ok", "502", "503", "504", "other", "refused", "reset", "client_timeout", "unfinished",
         "wrong_answer")
ERROR_KINDS = KINDS[1:]
LOST_KINDS = ("reset", "client_timeout", "unfinished")
UNFINISHED_TEXT = "unfinished when the step ended"  # experiments/load/locustfile.py


@dataclass(frozen=True)
class Record:
    scheduled: float  # unix s; the send time for a closed-loop row
    start: float      # unix s, the actual send
    rt_ms: float      # service time, from the send
    status: int       # HTTP status, 0 without one
    ok: bool
    error: str = ""

    @property
    def end(self) -> float:
        return self.start + self.rt_ms / 1000.0

    @property
    def latency_ms(self) -> float:
        """Response time: from the scheduled send to the answer."""
        return (self.end - self.scheduled) * 1000.0

    @property
    def kind(self) -> str:
        return classify(self.status, self.ok, self.error)


def classify(status: int, ok: bool, error: str) -> str:
    """One request's kind (KINDS), from its status, verdict and error text."""
    if ok:
        return "ok"
    if status == 200:
        return "wrong_answer"
    if status in (502, 503, 504):
        return str(status)
    if status:
        return "other"
    text = error.lower()
    if UNFINISHED_TEXT in text:
        return "unfinished"
    if "refused" in text:
        return "refused"
    if "timed out" in text or "timeout" in text:
        return "client_timeout"
    # reset, closed, broken pipe, EOF: the connection went away after the request was sent
    return "reset"


def read_records(paths: Iterable[Path]) -> list[Record]:
    """Records of request logs (requests_*.csv); a torn last line of a killed process is
    skipped."""
    out = []
    for path in paths:
        with Path(path).open(newline="") as f:
            for r in csv.DictReader(f):
                if r.get("ok") not in ("0", "1"):
                    continue  # a torn last line of a killed process
                try:
                    start = float(r["start_unix"])
                    out.append(Record(float(r.get("scheduled_unix") or start), start,
                                      float(r["response_time_ms"]), int(r["status"] or 0),
                                      r["ok"] == "1", r.get("error") or ""))
                except (KeyError, ValueError, TypeError):
                    continue
    out.sort(key=lambda x: x.scheduled)
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def good(r: Record, bound_ms: float) -> bool:
    return r.ok and r.latency_ms <= bound_ms


def counts(records: Iterable[Record]) -> dict[str, int]:
    """Requests per kind (every kind present, 0 when none)."""
    out = dict.fromkeys(KINDS, 0)
    for r in records:
        out[r.kind] += 1
    return out


@dataclass(frozen=True)
class Summary:
    """A span of requests (a sweep step): what was offered, what was served in time."""

    requests: int
    span_s: float
    offered_rps: float
    goodput_rps: float
    answered: int        # HTTP 200 with an answer, in time or not
    good: int            # answered within the bound
    errors: dict[str, int]
    p50_ms: float | None  # of the answers served
    p99_ms: float | None
    lost: int
    wrong: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(records: Sequence[Record], span_s: float, bound_ms: float) -> Summary:
    """``records`` (all scheduled within a span of span_s seconds) as one Summary."""
    if span_s <= 0:
        raise ValueError(f"span_s = {span_s!r}: must be > 0")
    by_kind = counts(records)
    served = [r.latency_ms for r in records if r.ok]
    n_good = sum(1 for r in records if good(r, bound_ms))
    return Summary(
        requests=len(records), span_s=span_s, offered_rps=len(records) / span_s,
        goodput_rps=n_good / span_s, answered=len(served), good=n_good,
        errors={k: by_kind[k] for k in ERROR_KINDS}, p50_ms=percentile(served, 50),
        p99_ms=percentile(served, 99), lost=sum(by_kind[k] for k in LOST_KINDS),
        wrong=by_kind["wrong_answer"])


@dataclass(frozen=True)
class Window:
    t: float  # start, seconds from t0
    offered: int
    good: int  # answered within the bound
    goodput_rps: float
    errors: dict[str, int]
    p99_ms: float | None

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def good_share(self) -> float | None:
        """The share of the window's arrivals answered within the bound (None: no arrival)."""
        return self.good / self.offered if self.offered else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def windows(records: Sequence[Record], t0: float, t1: float, width_s: float,
            bound_ms: float) -> list[Window]:
    """Windows of ``width_s`` of scheduled time from t0 (unix s) until t1."""
    if width_s <= 0:
        raise ValueError(f"width_s = {width_s!r}: must be > 0")
    n = max(0, math.ceil((t1 - t0) / width_s - 1e-9))
    buckets: list[list[Record]] = [[] for _ in range(n)]
    for r in records:
        k = math.floor((r.scheduled - t0) / width_s)
        if 0 <= k < n:
            buckets[k].append(r)
    out = []
    for k, rs in enumerate(buckets):
        by_kind = counts(rs)
        n_good = sum(1 for r in rs if good(r, bound_ms))
        out.append(Window(round(k * width_s, 6), len(rs), n_good, n_good / width_s,
                          {e: by_kind[e] for e in ERROR_KINDS if by_kind[e]},
                          percentile([r.latency_ms for r in rs if r.ok], 99)))
    return out


def healthy(w: Window, ref_p99_ms: float, tolerance: float) -> bool:
    """A window with no error whose served p99 is within tolerance x the reference (a window
    without requests says nothing against it)."""
    return w.failed == 0 and (w.p99_ms is None or w.p99_ms <= tolerance * ref_p99_ms)


def as_control(w: Window, ref: Window | None, tolerance: float) -> bool:
    """A window no worse than the control's same window: no more failures, and a served p99
    within tolerance x the control's (False without a control or its p99)."""
    if ref is None or w.failed > ref.failed:
        return False
    return w.p99_ms is None or (ref.p99_ms is not None and w.p99_ms <= tolerance * ref.p99_ms)


def shifted(records: Sequence[Record], by_s: float) -> list[Record]:
    """The records with their times moved by ``by_s``: a control run's schedule on another
    run's clock (both from one seed, so offset k of one is offset k of the other)."""
    return [replace(r, scheduled=r.scheduled + by_s, start=r.start + by_s) for r in records]


@dataclass(frozen=True)
class FaultEffect:
    baseline_p99_ms: float | None  # before the fault: what "recovered" returns to
    detect_s: float | None         # fault start -> the first failed or late answer (None: none)
    detect_by: str | None          # "error" or "latency": what that first answer was
    recover_s: float | None        # fault end -> healthy for good (None: not within the run)
    failed: int                    # failed requests scheduled from the fault's start on
    lost: int
    wrong: int
    errors: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fault_effect(records: Sequence[Record], fault_start: float, fault_end: float,
                 run_end: float, *, width_s: float = 1.0, tolerance: float = 1.5,
                 bound_ms: float = math.inf,
                 control: Sequence[Record] | None = None) -> FaultEffect:
    """What a fault in [fault_start, fault_end) (unix s) did to a run whose schedule ends at
    run_end. The baseline is the served p99 of the requests scheduled before the fault;
    recovery is judged per window of width_s from the fault's end (a window's requests may
    have been scheduled during the fault only if the window starts before its end).
    ``control``: the same schedule's requests without the fault, their scheduled times on this
    run's clock (``shifted``); a window is then also healthy when it is no worse than the
    control's same window (no more failures, p99 within tolerance x the control's): what the
    schedule does without the fault is not the fault's."""
    if not fault_start <= fault_end <= run_end:
        raise ValueError(f"need fault_start <= fault_end <= run_end, got {fault_start}, "
                         f"{fault_end}, {run_end}")
    before = [r.latency_ms for r in records if r.ok and r.scheduled < fault_start]
    baseline = percentile(before, 99)
    after = [r for r in records if r.scheduled >= fault_start]
    failed = [r for r in after if not r.ok]
    first_error = min((r.end for r in failed), default=None)
    # A fault that fails nothing (the model slower) is seen in latency: the first answer past
    # tolerance x the pre-fault p99 to a request scheduled while the fault was on (a normal
    # answer passes its own run's p99 1 time in 100, and that by 1.5x more rarely still; the
    # quick run's one such answer 3 s after a kill's window was noise, not the kill).
    first_late = (min((r.end for r in after if r.ok and r.scheduled < fault_end
                       and r.latency_ms > tolerance * baseline), default=None)
                  if baseline is not None else None)
    found = [(t, by) for t, by in ((first_error, "error"), (first_late, "latency"))
             if t is not None]
    detect, detect_by = min(found) if found else (None, None)
    recover = None
    if baseline is not None:
        ws = windows(records, fault_end, run_end, width_s, bound_ms)
        refs = (windows(control, fault_end, run_end, width_s, bound_ms) if control is not None
                else [None] * len(ws))
        recover_at = None
        for w, ref in reversed(list(zip(ws, refs, strict=True))):  # the last unhealthy decides
            if not (healthy(w, baseline, tolerance) or as_control(w, ref, tolerance)):
                break
            recover_at = w.t
        if recover_at is not None:
            recover = recover_at
    by_kind = counts(after)
    return FaultEffect(
        baseline_p99_ms=baseline,
        detect_s=None if detect is None else max(0.0, detect - fault_start),
        detect_by=detect_by, recover_s=recover, failed=len(failed),
        lost=sum(by_kind[k] for k in LOST_KINDS), wrong=by_kind["wrong_answer"],
        errors={k: by_kind[k] for k in ERROR_KINDS if by_kind[k]})


def goodput_return_s(ws: Sequence[Window], after_t: float,
                     fraction: float = 0.9) -> float | None:
    """Seconds from ``after_t`` (seconds from t0, the trigger's end) until every later window
    answers at least ``fraction`` of its own arrivals within the bound (None: not within the
    run). Against each window's arrivals, not the nominal rate: a Poisson window of 56 expected
    arrivals holds fewer than 50 about one time in five, so a nominal target would read
    arrival noise as a stack that never came back."""
    back = None
    for w in reversed([w for w in ws if w.t >= after_t]):
        share = w.good_share
        if share is not None and share < fraction:
            break
        back = w.t
    return None if back is None else back - after_t
