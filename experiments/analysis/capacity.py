"""Capacity under a latency bound, as MLPerf LoadGen's server scenario defines it: the highest
arrival rate whose p99 *response time* (measured from each request's scheduled send time) is
within a bound and whose errors stay under a small fraction. Pure logic: the caller supplies
`measure(rate) -> StepResult` (an open-model Locust step) and this module decides what to try
next and what the answer is.

The search is a bracket, not a ramp read-out: grow the rate geometrically from a start rate
until a step fails (or the configured maximum is reached), then bisect between the highest
passing and the lowest failing rate until they are within `precision` of each other. Short
steps overstate what a system sustains when it degrades slowly (a queue that grows a little,
or a stack whose CPU per request rises with its backlog: the committed run of 2026-11-30 had
async pass a 10 s step at 134.5 req/s and collapse, 74 % of requests 504, when that rate was
held 20 s). So, when the caller gives `confirm`, the bracket's passing end must also pass a
*hold* (a longer step at that rate) before it is the capacity. A hold that fails shows the
short steps overstate this system: the failing end moves down to it, short passes stop
counting, and the search goes on in holds (one step of sqrt(growth) down, then bisection)
until the bracket closes on a held rate or `max_holds` are spent. A step
the load generator itself limited (its CPU over half its cores, or sending slower than the
schedule without the system holding requests back), or that started before the stack had
recovered from the previous one (experiments/lab/recovery.py), is *invalid*: the search
stops and says so instead of reporting a capacity it cannot vouch for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from experiments.analysis.history import read_requests
from experiments.analysis.tail import (
    FAIL,
    PASS,
    UNDECIDED,
    requests_to_decide,
    requests_to_pass,
    tail_verdict,
)
from experiments.protocol import CapacityParams


@dataclass(frozen=True)
class Bound:
    """One product requirement, shared by every architecture (absolute milliseconds)."""

    p99_ms: float
    max_error_fraction: float = 0.01
    # The generator must send at least this share of the schedule ...
    min_achieved_fraction: float = 0.95
    # ... and use at most this share of its cores, or the step measured the generator.
    max_loadgen_cpu_fraction: float = 0.5
    # The p99 is judged with this confidence (experiments/analysis/tail.py): pass or fail only
    # when the binomial interval on the share of requests over the bound lies on one side of
    # 1 %, else the step is undecided. 0: the point estimate, as runs before verdicts had a
    # confidence (their replays stay as recorded).
    confidence: float = 0.0
    quantile: float = 0.99


@dataclass(frozen=True)
class StepResult:
    rate: float  # scheduled arrivals per second
    achieved_rate: float  # requests actually sent per second of the step
    requests: int
    errors: int
    p99_response_ms: float  # from the scheduled send time
    p99_service_ms: float  # from the actual send time
    loadgen_cpu_fraction: float  # busiest generator host: CPU used / its cores
    # Requests that waited because the generator's in-flight cap was reached: the system
    # under test held them back (overload), so a shortfall they explain is not invalid.
    inflight_cap_hits: int = 0
    # What this step's schedule asked for, per second (a Poisson schedule of a few seconds
    # differs from `rate` by chance): the achieved rate is held to this. None: `rate`.
    scheduled_rate: float | None = None
    # A confirming hold (a longer step at a rate the short steps passed), not a search step.
    hold: bool = False
    duration_s: float | None = None  # the schedule's length
    # The wait for the stack to recover from the previous step before this one started
    # (experiments/lab/recovery.py); None for steps run before waits existed.
    recovery_wait_s: float | None = None
    recovered: bool | None = None
    restarted: bool | None = None  # the wait ran out and the services were restarted
    # Requests resent once after the server closed their connection unanswered
    # (experiments/load/locustfile.py, _score): reported, not judged.
    retried: int = 0
    # Which proof this is (experiment 3's max-performance run at a capacity found, judged as a
    # hold: capacity_proof), 1-based; 0: a step of the search. Left out of records when 0.
    proof: int = 0
    # Per request, in schedule order: the response time from the scheduled send (ms; a failed
    # request is +inf: it got no answer within any bound) and the scheduled time from the
    # step's start (s). In memory only (records keep counts): a confidence verdict counts the
    # requests over a bound, and a hold's drift is judged on its last third.
    latency_ms: np.ndarray | None = field(default=None, compare=False, repr=False)
    offset_s: np.ndarray | None = field(default=None, compare=False, repr=False)

    def over(self, bound_ms: float, from_fraction: float = 0.0) -> tuple[int, int]:
        """(requests over bound_ms, requests) among those scheduled after from_fraction of the
        step's schedule."""
        if self.latency_ms is None:
            raise ValueError("this step carries no per-request latencies")
        lat = self.latency_ms
        if from_fraction > 0:
            assert self.offset_s is not None and self.duration_s is not None
            lat = lat[self.offset_s >= from_fraction * self.duration_s]
        return int(np.count_nonzero(lat > bound_ms)), int(len(lat))

    def window_p99_ms(self, window_s: float = 5.0) -> list[float]:
        """The p99 response time per `window_s` of schedule (a failed request counts as over
        every bound): how the tail moves over a hold. Windows of no request are left out."""
        if self.latency_ms is None or self.offset_s is None or not len(self.latency_ms):
            return []
        index = (self.offset_s // window_s).astype(int)
        out = []
        for w in range(int(index.max()) + 1):
            lat = self.latency_ms[index == w]
            if len(lat):  # an observed value: between two failed requests (inf) lies no p99
                out.append(float(np.percentile(lat, 99, method="higher")))
        return out

    def record(self) -> dict:
        """The step's fields for a result record: per-request arrays left out, a hold's p99
        per 5 s window in (None: a window whose p99 is a failed request)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("latency_ms", "offset_s")}
        if not self.proof:
            del out["proof"]  # records of search steps stay as they were before proofs counted
        if self.hold and self.latency_ms is not None:
            out["window_p99_ms"] = [None if math.isinf(w) else round(w, 1)
                                    for w in self.window_p99_ms(WINDOW_S)]
        return out


def step_result(run_dir: str | Path, grace_s: float = 3.0) -> StepResult:
    """A finished open-model Locust run folder (result.json, requests_*.csv, guard samples)
    as one step of the search. Percentiles are exact, over every scheduled request (those
    unanswered at the end count as errors). The generator's CPU is its mean over the run
    after the start-up grace, as a share of the cores it may use; the busiest of the local
    tree and every remote host counts."""
    run_dir = Path(run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    counts = result.get("open_model")
    if not counts:
        raise ValueError(f"{run_dir} is not an open-model run (no open_model in result.json)")
    reqs = read_requests(run_dir)
    start = result["started_at"] + grace_s
    # the local tree (master, local workers) and each load-generator host's own guard
    guards = [run_dir / "guard.json", *sorted(run_dir.glob("hosts/*/guard.json"))]
    fractions = [_mean_cpu_fraction(json.loads(p.read_text()), start) for p in guards
                 if p.exists()]
    pct = (lambda a: float(np.percentile(a, 99))) if len(reqs) else (lambda a: math.nan)
    recovery = read_recovery(run_dir)
    order = np.argsort(reqs.scheduled, kind="stable") if len(reqs) else np.arange(0)
    latency = np.where(reqs.ok, reqs.response_ms, np.inf)[order]
    # the first scheduled request stands for the schedule's start (a Poisson schedule's first
    # gap is 1/rate on average: negligible against a step)
    scheduled = reqs.scheduled[order] if len(reqs) else np.empty(0)
    offset = scheduled - float(np.nanmin(scheduled)) if len(reqs) else scheduled
    return StepResult(
        rate=float(counts["rate"]),
        achieved_rate=float(counts["achieved_rate"]),
        requests=len(reqs),
        errors=reqs.failures,
        p99_response_ms=pct(reqs.response_ms),
        p99_service_ms=pct(reqs.service_ms),
        loadgen_cpu_fraction=max(fractions, default=0.0),
        inflight_cap_hits=int(counts["inflight_cap_hits"]),
        scheduled_rate=int(counts["scheduled"]) / float(counts["schedule_s"]),
        hold=run_dir.name.endswith(HOLD_SUFFIX),
        duration_s=float(counts["schedule_s"]),
        recovery_wait_s=None if recovery is None else float(recovery["waited_s"]),
        recovered=None if recovery is None else bool(recovery["recovered"]),
        restarted=None if recovery is None else "restart" in recovery,
        retried=int(counts.get("retried_closed", 0)),  # absent in runs before resends
        latency_ms=latency,
        offset_s=offset,
    )


WINDOW_S = 5.0  # a hold's tail shown per window of this many seconds of schedule
HOLD_SUFFIX = "_hold"  # a hold's step folder: NN_<rate>rps_hold
RECOVERY_FILE = "recovery.json"  # a step folder's recovery wait (experiments/lab/recovery.py)


def read_recovery(step_dir: str | Path) -> dict | None:
    """A step folder's recovery record; None for steps run before waits existed."""
    path = Path(step_dir) / RECOVERY_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _mean_cpu_fraction(guard: dict, start: float) -> float:
    busy = [s["total_percent"] for s in guard.get("samples", []) if s["t"] >= start]
    return float(np.mean(busy)) / (100 * max(1, guard.get("cores", 1))) if busy else 0.0


@dataclass(frozen=True)
class Verdict:
    outcome: str  # "pass", "fail", "undecided" (a confidence verdict's interval straddles
    # the bound) or "invalid"
    reason: str
    # a confidence verdict's counts: requests over the bound, requests, and the bounds on
    # their share (experiments/analysis/tail.py)
    tail: dict | None = None


def judge(step: StepResult, bound: Bound) -> Verdict:
    if step.recovered is False:
        return Verdict("invalid", f"started before the stack recovered from the previous "
                                  f"step (probed {step.recovery_wait_s:.0f} s): it would "
                                  "measure that step's backlog, not this rate")
    if step.loadgen_cpu_fraction > bound.max_loadgen_cpu_fraction:
        return Verdict("invalid", f"load generator at {step.loadgen_cpu_fraction:.0%} of its "
                                  f"cores (limit {bound.max_loadgen_cpu_fraction:.0%})")
    scheduled = step.rate if step.scheduled_rate is None else step.scheduled_rate
    short = step.achieved_rate < bound.min_achieved_fraction * scheduled
    if short and not step.inflight_cap_hits:
        return Verdict("invalid", f"sent {step.achieved_rate:.1f}/s of {scheduled:.1f}/s "
                                  "scheduled with no in-flight cap reached: the generator "
                                  "fell behind")
    if step.requests == 0:
        return Verdict("invalid", "no request completed")
    error_fraction = step.errors / step.requests
    if error_fraction > bound.max_error_fraction:
        return Verdict("fail", f"errors {error_fraction:.1%} > {bound.max_error_fraction:.1%}")
    if short:
        return Verdict("fail", f"in-flight cap reached {step.inflight_cap_hits} times: the "
                               f"system held requests back (sent {step.achieved_rate:.1f}/s "
                               f"of {scheduled:.1f}/s)")
    if bound.confidence:
        return _judge_tail(step, bound)
    if not step.p99_response_ms <= bound.p99_ms:
        return Verdict("fail", f"p99 {step.p99_response_ms:.0f} ms > {bound.p99_ms:g} ms")
    return Verdict("pass", f"p99 {step.p99_response_ms:.0f} ms <= {bound.p99_ms:g} ms")


# A hold's last part judged alone: a tail that drifts up over the hold fails it even when
# the whole hold's p99 passes (the system is not stationary at this rate: a queue grows).
DRIFT_FROM = 2 / 3


def _judge_tail(step: StepResult, bound: Bound) -> Verdict:
    """The p99 verdict at bound.confidence (experiments/analysis/tail.py) and, for a hold,
    the same test on its last third."""
    over, n = step.over(bound.p99_ms)
    v = tail_verdict(over, n, bound.quantile, bound.confidence)
    tail = {"over": over, "n": n, "share": v.share, "lower": v.lower, "upper": v.upper,
            "confidence": bound.confidence}
    allowed = 1 - bound.quantile
    said = (f"p99 {step.p99_response_ms:.0f} ms; {over} of {n} over {bound.p99_ms:g} ms, "
            f"share {v.lower:.2%}..{v.upper:.2%} at {bound.confidence:.0%}")
    if v.outcome == PASS and step.hold:
        late_over, late_n = step.over(bound.p99_ms, DRIFT_FROM)
        late = tail_verdict(late_over, late_n, bound.quantile, bound.confidence) \
            if late_n else None
        tail["last_third"] = {"over": late_over, "n": late_n}
        if late is not None and late.outcome == FAIL:
            return Verdict(FAIL, f"tail drifting: {late_over} of {late_n} requests of the "
                                 f"hold's last third over {bound.p99_ms:g} ms ({said})", tail)
    relation = {PASS: f"<= {allowed:.0%}", FAIL: f"> {allowed:.0%}",
                UNDECIDED: f"straddles {allowed:.0%}"}[v.outcome]
    return Verdict(v.outcome, f"{said}: {relation}", tail)


@dataclass
class CapacityResult:
    """status: "found" (capacity bracketed within precision, and held when holds are asked
    for), "above_range" (every rate up to max_rate passed: capacity is a lower bound),
    "below_range" (even min_rate failed), "invalid" (a step was limited by the generator;
    capacity, if any, is the last rate that passed before it), "unfinished" (a budget ran
    out before the bracket closed on a held rate: capacity is then the highest rate that
    passed a hold, if any, a lower bound; `budget` says which ran out)."""

    status: str
    capacity: float | None  # highest passing rate
    first_failing: float | None  # lowest failing (or undecided) rate
    steps: list[dict] = field(default_factory=list)
    # when "unfinished": "steps" (max_steps short steps), "holds" (max_holds holds), "time"
    # (budget_s seconds of load); None otherwise, or when a replay cannot tell
    budget: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


BUDGETS = {"steps": "the step budget (max_steps short steps) ran out",
           "holds": "the hold budget (max_holds holds) ran out",
           "time": "the time budget (budget_s seconds of load) ran out",
           "proofs": "the proof budget (max_proofs max-performance runs) ran out"}


def step_duration(rate: float, min_duration_s: float, min_requests: int,
                  max_duration_s: float = 0.0) -> float:
    """How long a step's schedule runs: at least min_duration_s, and long enough for about
    min_requests arrivals, so that its p99 rests on enough requests (100 give one above it),
    but no longer than max_duration_s when that is set (> 0)."""
    duration = max(float(min_duration_s), min_requests / rate)
    return min(duration, max_duration_s) if max_duration_s else duration


NOT_PASSED = (FAIL, UNDECIDED)  # what bounds the bracket from above


def search_capacity(
    measure: Callable[[float], StepResult],
    bound: Bound,
    *,
    start_rate: float,
    max_rate: float,
    min_rate: float = 1.0,
    growth: float = 2.0,
    precision: float = 0.05,
    max_steps: int = 16,
    prior: Iterable[StepResult] = (),
    confirm: Callable[[float], StepResult] | None = None,
    max_holds: int = 3,
    require_hold: bool | None = None,
    extend: Callable[[float, bool, int | None], StepResult] | None = None,
    budget_s: float = 0.0,
    hold_reserve_s: float = 0.0,
    long_step_s: float = 0.0,
    spent_s: float = 0.0,
) -> CapacityResult:
    """Search with `measure` (short steps) and, when given, `confirm` (holds); `prior` steps
    (measured already, e.g. by a search under another bound) are judged under this bound
    first and narrow the bracket without being re-run. require_hold (default: whether
    `confirm` is given) decides whether the capacity must have passed a hold; a replay of a
    folder sets it from the protocol.

    `extend(rate, hold, requests)`: a step (or hold) whose confidence verdict is undecided is
    measured once more at that rate, longer (about `requests` requests, None: the caller's
    longest); the longer measurement supersedes it. An undecided rate counts as not passed.
    `budget_s` > 0: the search stops starting steps once that many seconds of load are spent
    (holds are no longer counted against max_holds): a failed hold is followed by holds that
    bisect down to the precision, so the search closes instead of stopping at a floor; once
    less than `hold_reserve_s` of it is left, the best passing rate is held before anything
    else, and a budget spent with nothing held still holds the best passing rate once (it
    overruns by that hold), so a spent budget leaves a held lower bound. An extension of a
    short step is not started once it would eat into that reserve.
    `long_step_s` > 0: a step whose schedule ran at least that long counts as a hold (a
    120 s extension at a rate says all a 60 s hold there would; holding it again is waste).
    `spent_s`: seconds of the time budget already spent (a search resumed below a failed
    proof goes on within what its first part left)."""
    if not 0 < min_rate <= start_rate <= max_rate:
        raise ValueError(f"need 0 < min_rate ({min_rate}) <= start_rate ({start_rate}) "
                         f"<= max_rate ({max_rate})")
    if growth <= 1 or precision <= 0:
        raise ValueError(f"growth ({growth}) must be > 1 and precision ({precision}) > 0")
    need_hold = confirm is not None if require_hold is None else require_hold
    steps: list[dict] = []
    # rate, outcome, held (a hold, or a step as long as one), live (False once a longer
    # measurement superseded it), and whether it ran as a hold
    outcomes: list[list] = []
    extended: set[tuple[float, bool]] = set()
    spent = [float(spent_s)]

    def record(step: StepResult, reused: bool) -> Verdict:
        verdict = judge(step, bound)
        for i, o in enumerate(outcomes):
            # a proof is a run of its own (the max-performance load, not a hold measured
            # again): it neither supersedes a hold nor is superseded by one
            if step.proof or steps[i].get("proof"):
                continue
            if o[3] and o[1] == UNDECIDED and o[0] == step.rate and o[4] == step.hold:
                o[3] = False
                steps[i]["superseded"] = True
        steps.append({**step.record(), "outcome": verdict.outcome, "reason": verdict.reason,
                      "reused": reused,
                      **({"tail": verdict.tail} if verdict.tail is not None else {})})
        long = bool(long_step_s) and (step.duration_s or 0.0) >= long_step_s - 1e-6
        outcomes.append([step.rate, verdict.outcome, step.hold or long, True, step.hold])
        if not reused:
            spent[0] += step.duration_s or 0.0
        return verdict

    def run(rate: float, hold: bool) -> str:
        verdict = record((confirm if hold else measure)(rate), False)
        # the reserve matters only while a passing rate waits to be held
        waiting = (any(o == PASS for _, o, _, alive, _ in outcomes if alive)
                   and not any(h and o == PASS for _, o, h, alive, _ in outcomes if alive))
        eats_reserve = (not hold and waiting and bool(budget_s) and bool(hold_reserve_s)
                        and spent[0] + hold_reserve_s >= budget_s)
        if verdict.outcome == UNDECIDED and extend is not None and not eats_reserve \
                and (rate, hold) not in extended:
            extended.add((rate, hold))
            t = verdict.tail or {}
            wanted = (requests_to_decide(t["over"], t["n"], bound.quantile, bound.confidence)
                      if t else None)
            verdict = record(extend(rate, hold, wanted), False)
        return verdict.outcome

    for step in sorted(prior, key=lambda s: (s.rate, s.hold, s.duration_s or 0.0)):
        record(step, True)
    measured = holds = 0
    budget = None
    reserve_held = False
    while True:
        live = [(r, o, h) for r, o, h, alive, _ in outcomes if alive]
        bad = min((r for r, o, _ in live if o in NOT_PASSED), default=None)
        # Once a hold has failed, short steps are shown to overstate this system: their
        # passes stop counting (their failures still count) and the search goes on in holds.
        hold_failed = any(h and o in NOT_PASSED for _, o, h in live)
        good = max((r for r, o, h in live if o == PASS and (h or not hold_failed)
                    and (bad is None or r < bad)), default=None)
        held = good is not None and any(h and o == PASS and r == good for r, o, h in live)
        closed = good is not None and (good >= max_rate or
                                       (bad is not None and bad / good <= 1 + precision))
        if closed and (held or not need_hold):
            status = "found" if good < max_rate else "above_range"
            break
        if budget_s and spent[0] >= budget_s:
            if (need_hold and good is not None and not held and confirm is not None
                    and not reserve_held):
                # the reserve: vouch for the best passing rate, past the budget by one hold
                reserve_held = True
                holds += 1
                if run(good, True) == "invalid":
                    status = "invalid"
                    break
                continue
            status, budget = "unfinished", "time"
            break
        if closed or hold_failed:
            if good is not None and not closed:
                rate = math.sqrt(good * bad)
            elif good is not None:
                rate = good
            elif bad <= min_rate:
                status = "below_range"
                break
            else:
                rate = max(bad / math.sqrt(growth), min_rate)
            if confirm is None or (not budget_s and holds >= max_holds):
                status = "unfinished"
                budget = "holds" if confirm is not None else None
                break
            holds += 1
            if run(rate, True) == "invalid":
                status = "invalid"
                break
            continue
        if good is not None and bad is not None:
            rate = math.sqrt(good * bad)  # geometric middle: rates span decades
        elif good is not None:
            rate = min(good * growth, max_rate)
        elif bad is not None:
            if bad <= min_rate:
                status = "below_range"
                break
            rate = max(bad / growth, min_rate)
        else:
            rate = start_rate
        # With a time budget, the last of it is kept for a hold: a search that spent it all on
        # short steps would vouch for nothing (a default sync search at 5-6 req/s did, its
        # undecided steps extended to 120 s each).
        out_of_time = bool(budget_s) and spent[0] + hold_reserve_s >= budget_s
        if measured >= max_steps or (out_of_time and need_hold and good is not None
                                     and not held):
            if need_hold and good is not None and not held and confirm is not None \
                    and (budget_s or holds < max_holds):
                # the bracket stays open, but the best passing rate can still be vouched for:
                # a held lower bound beats no capacity at all
                holds += 1
                outcome = run(good, True)
                if outcome == "invalid":
                    status = "invalid"
                    break
                if outcome == PASS:
                    held = True
                    status, budget = "unfinished", "time" if out_of_time else "steps"
                    break
                continue
            status = "unfinished"
            budget = "steps" if confirm is not None or max_steps else None
            break
        outcome = run(rate, False)
        measured += 1
        if outcome == "invalid":
            status = "invalid"
            break
    capacity = good
    if need_hold and not held:
        # only a rate that passed a hold, below every failing rate, is vouched for
        capacity = max((r for r, o, h, alive, _ in outcomes if alive and h and o == PASS
                        and (bad is None or r < bad)), default=None)
    return CapacityResult(status, capacity, bad, steps, budget)


# --------------------------------------------------------------------------- a result folder


def bound_of(params: CapacityParams, p99_ms: float) -> Bound:
    return Bound(p99_ms=p99_ms, max_error_fraction=params.max_error_fraction,
                 min_achieved_fraction=params.min_achieved_fraction,
                 max_loadgen_cpu_fraction=params.max_loadgen_cpu_fraction,
                 confidence=params.confidence)


def decidable_rate(params: CapacityParams) -> float:
    """The lowest rate the search tries: min_rate, and with a confidence verdict the rate at
    which the longest step (an extension, else max_step_s) still holds the requests a step
    needs to pass at all (299 at 95 % and p99): below it every step would be undecided and
    the search would walk down step by step for nothing (a check run of 2026-12-07 did, from
    5 to 1.25 req/s)."""
    longest = params.extend_max_s or params.max_step_s
    if not params.confidence or not longest:
        return params.min_rate
    needed = requests_to_pass(confidence=params.confidence)
    return min(max(params.min_rate, needed / longest), params.max_rate)


def long_step_s(params: CapacityParams) -> float:
    """How long a step must run to count as a hold: hold_s under the trust protocol (a
    confidence verdict; its extensions run past hold_s), never before it (runs recorded
    before it replay as recorded)."""
    return params.hold_s if params.confidence else 0.0


def planned_step_s(rate: float, params: CapacityParams) -> float:
    """How long the live search's step at `rate` runs: step_duration, and with a confidence
    verdict never shorter than a step needs to pass at all (requests_to_pass arrivals, up to
    the longest step allowed, extend_max_s): a shorter step can only come back undecided and
    be measured again, longer (a run of 2026-12-07 spent 40 s at 5 req/s on 200 requests
    before its 120 s extension)."""
    duration = step_duration(rate, params.min_step_s, params.min_requests, params.max_step_s)
    longest = params.extend_max_s or params.max_step_s
    if not params.confidence or not longest:
        return duration
    needed = requests_to_pass(confidence=params.confidence) / rate
    return max(duration, min(needed, longest))


def step_dirs(arch_dir: Path) -> list[Path]:
    """The step folders of one architecture's searches (raw/locust/capacity/<arch>/NN_*),
    in the order they ran."""
    if not arch_dir.is_dir():
        return []
    return sorted(d for d in arch_dir.iterdir() if d.is_dir() and (d / "result.json").exists())


def replay(params: CapacityParams, steps: Iterable[StepResult], p99_ms: float) -> CapacityResult:
    """The capacity recorded steps show under p99 <= p99_ms, measuring nothing: what a report
    derives from a folder. A step the generator limited makes the result "invalid"."""
    def no_measure(rate: float) -> StepResult:
        raise AssertionError(f"a replay measures nothing (asked for {rate})")

    min_rate = decidable_rate(params)
    result = search_capacity(no_measure, bound_of(params, p99_ms), start_rate=min_rate,
                             max_rate=params.max_rate, min_rate=min_rate,
                             growth=params.growth, precision=params.precision, max_steps=0,
                             prior=steps, max_holds=0, require_hold=params.hold_s > 0,
                             budget_s=params.budget_s, long_step_s=long_step_s(params))
    if any(s["outcome"] == "invalid" for s in result.steps):
        result.status = "invalid"
    if result.status == "unfinished":
        result.budget = _budget_spent(params, result.steps)
    return result


def _budget_spent(params: CapacityParams, steps: list[dict]) -> str | None:
    """Which budget a recorded search that stopped unfinished had spent (None: none was, e.g.
    the run was interrupted)."""
    if params.budget_s:
        spent = sum(s["duration_s"] or 0.0 for s in steps)
        return "time" if spent >= params.budget_s else None
    holds = sum(1 for s in steps if s["hold"])
    if params.hold_s and holds >= params.max_holds:
        return "holds"
    return "steps" if len(steps) - holds >= params.max_steps else None


def capacity_proof(run_dir: Path, params: CapacityParams, grace_s: float,
                   p99_ms: float) -> dict | None:
    """An open-model run held at the capacity a search found (experiment 3's max performance)
    judged as one more hold under the same bound: it must meet the bound too, or the
    capacity was not one. None without such a run."""
    if not (Path(run_dir) / "result.json").exists():
        return None
    return proof_record(proof_step(run_dir, grace_s), bound_of(params, p99_ms))


PROOF_PREFIX = "proof_"  # a further proof's folder: max_performance/<arch>/proof_NN/


def proof_step(run_dir: Path, grace_s: float, n: int = 1) -> StepResult:
    """Proof n (1-based), an open-model run at a capacity found, as the hold it is judged as."""
    return replace(step_result(run_dir, grace_s=grace_s), hold=True, proof=n)


def proof_record(step: StepResult, bound: Bound) -> dict:
    """A proof's verdict for the manifest and the report."""
    verdict = judge(step, bound)
    return {"rate": step.rate, "outcome": verdict.outcome, "reason": verdict.reason,
            "p99_response_ms": step.p99_response_ms, "requests": step.requests,
            "window_p99_ms": step.record().get("window_p99_ms")}


def proof_dirs(run_dir: Path) -> list[Path]:
    """An architecture's proofs in order: its max-performance folder (the first) and, under
    proof_search_on, the further proofs in it (proof_02, proof_03, ...). [] without a run."""
    run_dir = Path(run_dir)
    if not (run_dir / "result.json").exists():
        return []
    more = sorted(d for d in run_dir.glob(f"{PROOF_PREFIX}*")
                  if d.is_dir() and (d / "result.json").exists())
    return [run_dir, *more]


def replay_with_proofs(params: CapacityParams, steps: Iterable[StepResult],
                       proofs: Iterable[StepResult], p99_ms: float) -> CapacityResult:
    """The capacity under proof_search_on: every proof counts as one more hold of the search
    (a failed or undecided one, the search went on below it), replayed with its steps. A last
    proof that did not pass leaves the capacity a lower bound, never a found one: "unfinished",
    budget "proofs" when max_proofs were run (None: the run stopped before the next proof)."""
    proofs = list(proofs)
    result = replay(params, [*steps, *proofs], p99_ms)
    if not proofs or result.status == "invalid" or result.capacity is None:
        return result
    if judge(proofs[-1], bound_of(params, p99_ms)).outcome != PASS:
        result.status = "unfinished"
        result.budget = "proofs" if len(proofs) >= params.max_proofs else None
    return result


HOLD_LENGTHS_S = (15.0, 30.0, 60.0, 120.0)


def capacity_by_hold_length(steps: Iterable[StepResult], bound: Bound,
                            lengths_s: Iterable[float] = HOLD_LENGTHS_S) -> list[dict]:
    """What the search's holds would have said had they been shorter: each hold cut to its
    first T seconds of schedule and judged again (with the bound's confidence, if any), for
    every T a hold lasted, a cut hold's last third judged alone too (DRIFT_FROM), as the
    search judges a hold. Per T, the capacity is the highest held rate that passes with
    every held rate below it passing too (rates not held are not known). A capacity that
    falls as T grows is a stack whose tail drifts at a fixed rate: the short hold overstated
    it."""
    holds = sorted((s for s in steps if s.hold and s.latency_ms is not None
                    and s.offset_s is not None), key=lambda s: s.rate)
    rows = []
    for length in lengths_s:
        verdicts = []
        for h in holds:
            if (h.duration_s or 0.0) < length - 1e-6:
                continue
            cut = h.offset_s < length
            lat = h.latency_ms[cut]
            if not len(lat):
                continue
            if bound.confidence:
                # the verdict a hold of this length gets in the search, its last-third drift
                # rule included: the table's last column is the search's own answer
                short = replace(h, latency_ms=lat, offset_s=h.offset_s[cut], duration_s=length)
                outcome = _judge_tail(short, bound).outcome
            else:
                # an observed value (failed requests are inf: no p99 between two of them)
                p99 = np.percentile(lat, 100 * bound.quantile, method="higher")
                outcome = PASS if p99 <= bound.p99_ms else FAIL
            verdicts.append((h.rate, outcome))
        if not verdicts:
            continue
        capacity = first_not = None
        for rate, outcome in verdicts:
            if outcome != PASS:
                first_not = rate
                break
            capacity = rate
        rows.append({"hold_s": length, "holds": len(verdicts), "capacity": capacity,
                     "first_not_passed": first_not,
                     "verdicts": [{"rate": r, "outcome": o} for r, o in verdicts]})
    return rows


def one_user_p99_ms(response_time_dir: Path) -> float | None:
    """p99 (ms) of the successful requests of a 1-user run: the base of the relative bound."""
    if not any(response_time_dir.glob("requests_*.csv")):
        return None
    reqs = read_requests(response_time_dir)
    ok = reqs.rt_ms[reqs.ok]
    return float(np.percentile(ok, 99)) if len(ok) else None


def analyse_search(arch_dir: Path, params: CapacityParams, grace_s: float,
                   one_user_dir: Path | None = None,
                   proofs: Iterable[StepResult] = ()) -> dict | None:
    """One architecture's search folder (its NN_<rate> steps), from the folder alone: the
    capacity under the shared bound and, when params ask for it and one_user_dir holds a
    1-user run, under factor x that run's p99; every step re-judged. None without steps.
    `proofs` (under proof_search_on): the max-performance runs at the capacities found, holds
    of the shared search (replay_with_proofs)."""
    steps = [step_result(d, grace_s=grace_s) for d in step_dirs(arch_dir)]
    if not steps:
        return None
    proofs = list(proofs)
    shared = (replay_with_proofs(params, steps, proofs, params.p99_bound_ms)
              if params.proof_search_on and proofs else
              replay(params, steps, params.p99_bound_ms))
    entry = {"shared": {"p99_bound_ms": params.p99_bound_ms, **shared.to_dict()}}
    by_length = capacity_by_hold_length(steps, bound_of(params, params.p99_bound_ms))
    if by_length:
        entry["shared"]["by_hold_length"] = by_length
    one_user = one_user_p99_ms(one_user_dir) if one_user_dir is not None else None
    if params.relative_bound_factor and one_user is not None:
        bound = params.relative_bound_factor * one_user
        entry["relative"] = {"p99_bound_ms": bound, "one_user_p99_ms": one_user,
                             "factor": params.relative_bound_factor,
                             **replay(params, steps, bound).to_dict()}
    return entry


def analyse_capacity(root: Path, protocol: dict, grace_s: float) -> dict[str, dict]:
    """Per architecture, the searches of one repeat's Locust folder (root/capacity/<arch>/;
    experiments.repeats.locust_root) through analyse_search, the relative bound based on
    root/response_time/<arch>/, and the capacity's proof, the open-model run held at it in
    root/max_performance/<arch>/ (capacity_proof). {} when the protocol searched nothing."""
    if not protocol.get("capacity"):
        return {}
    params = CapacityParams(**protocol["capacity"])
    base = root / "capacity"
    out: dict[str, dict] = {}
    for arch_dir in sorted(d for d in base.iterdir() if d.is_dir()) if base.is_dir() else []:
        if params.proof_search_on:
            entry = analyse_with_proofs(root, arch_dir.name, params, grace_s)
        else:
            entry = analyse_search(arch_dir, params, grace_s,
                                   root / "response_time" / arch_dir.name)
            proof = capacity_proof(root / "max_performance" / arch_dir.name, params, grace_s,
                                   params.p99_bound_ms)
            if entry is not None and proof is not None:
                entry["shared"]["proof"] = proof
        if entry is None:
            continue
        out[arch_dir.name] = entry
    return out


def analyse_with_proofs(root: Path, arch: str, params: CapacityParams,
                        grace_s: float) -> dict | None:
    """Under proof_search_on, one architecture's search in one repeat's Locust folder with its
    proofs (root/max_performance/<arch>/ and its proof_NN/) counted as holds: the entry the
    live run records and the report shows, "proof" the last proof and "proofs" every one."""
    bound = bound_of(params, params.p99_bound_ms)
    proofs = [proof_step(d, grace_s, n)
              for n, d in enumerate(proof_dirs(root / "max_performance" / arch), 1)]
    entry = analyse_search(root / "capacity" / arch, params, grace_s,
                           root / "response_time" / arch, proofs=proofs)
    if entry is not None and proofs:
        records = [proof_record(p, bound) for p in proofs]
        entry["shared"]["proof"] = records[-1]
        entry["shared"]["proofs"] = records
    return entry
