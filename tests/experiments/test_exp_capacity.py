"""The capacity search on fake steps (known thresholds) and on a simulated queue of blocking
workers whose ceiling is set by its configuration."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.analysis.capacity import Bound, StepResult, judge, search_capacity
from experiments.load.arrivals import ArrivalProcess

BOUND = Bound(p99_ms=500)


def _step(rate, *, p99=100.0, errors=0, achieved=None, cpu=0.1, cap_hits=0):
    return StepResult(rate, rate if achieved is None else achieved, 1000, errors, p99, p99 / 2,
                      cpu, cap_hits)


def _threshold(limit):
    calls = []

    def measure(rate):
        calls.append(rate)
        return _step(rate, p99=100.0 if rate <= limit else 5000.0)

    return measure, calls


@pytest.mark.parametrize("limit", [37.0, 3.3, 199.0])
def test_finds_a_known_threshold_within_precision(limit):
    measure, calls = _threshold(limit)
    r = search_capacity(measure, BOUND, start_rate=10, max_rate=1000, precision=0.02)
    assert r.status == "found"
    assert r.capacity <= limit < r.first_failing <= r.capacity * 1.02
    assert len(calls) == len(r.steps) <= 16


def test_every_rate_passing_gives_a_lower_bound():
    measure, _ = _threshold(1e9)
    r = search_capacity(measure, BOUND, start_rate=10, max_rate=100)
    assert (r.status, r.capacity, r.first_failing) == ("above_range", 100, None)


def test_even_the_minimum_failing_is_below_range():
    measure, _ = _threshold(0.5)
    r = search_capacity(measure, BOUND, start_rate=10, max_rate=100, min_rate=2)
    assert (r.status, r.capacity) == ("below_range", None)


def test_a_generator_limited_step_stops_the_search():
    def measure(rate):
        return _step(rate, cpu=0.8 if rate > 50 else 0.2)

    r = search_capacity(measure, BOUND, start_rate=20, max_rate=1000)
    assert r.status == "invalid" and r.capacity == 40
    assert "load generator at 80%" in r.steps[-1]["reason"]


def test_judge():
    assert judge(_step(10), BOUND).outcome == "pass"
    assert judge(_step(10, p99=501), BOUND).outcome == "fail"
    assert judge(_step(10, errors=11), BOUND).outcome == "fail"
    # a shortfall the generator explains is invalid; one the system explains is a failure
    assert judge(_step(10, achieved=9), BOUND).outcome == "invalid"
    assert judge(_step(10, achieved=9, cap_hits=40), BOUND).outcome == "fail"


def _simulated_queue(workers: int, hold_s: float, seed: int = 3):
    """A service of `workers` blocking workers, each request holding one for hold_s, fed with
    Poisson arrivals: response time = waiting for a free worker + hold (a FIFO multi-server
    queue, computed exactly by keeping the time each worker frees up)."""

    def measure(rate):
        times = ArrivalProcess(rate, seed=seed).times(max(60.0, 3000 / rate))
        free = np.zeros(workers)
        response = np.empty(len(times))
        for i, t in enumerate(times):
            w = int(np.argmin(free))
            start = max(t, free[w])
            free[w] = start + hold_s
            response[i] = free[w] - t
        p99 = float(np.percentile(response, 99)) * 1000
        return StepResult(rate, rate, len(times), 0, p99, hold_s * 1000, 0.1)

    return measure


def test_capacity_of_a_queue_is_below_its_ceiling_and_close_to_it():
    workers, hold = 2, 0.1  # ceiling: 2 / 0.1 s = 20 req/s (Little's law)
    r = search_capacity(_simulated_queue(workers, hold), Bound(p99_ms=1000),
                        start_rate=2, max_rate=100, precision=0.02)
    assert r.status == "found"
    assert 0.8 * 20 <= r.capacity < 20 <= r.first_failing * 1.5


def test_prior_steps_narrow_the_bracket_without_being_rerun():
    measure, calls = _threshold(37.0)
    first = search_capacity(measure, BOUND, start_rate=10, max_rate=1000, precision=0.02)
    measured = [StepResult(**{k: v for k, v in s.items()
                              if k not in ("outcome", "reason", "reused")}) for s in first.steps]
    calls.clear()
    # the same steps judged under a stricter bound: fails above 20 where p99 was 5000 ms ...
    strict = Bound(p99_ms=50)  # ... and everything fails (p99 100 ms > 50 ms)
    again = search_capacity(measure, strict, start_rate=10, max_rate=1000, min_rate=2,
                            prior=measured)
    assert again.status == "below_range" and again.capacity is None
    assert all(s["reused"] for s in again.steps[: len(measured)])
    assert min(calls) >= 2 and len(calls) <= 3  # only rates below every prior failure
    # under the same bound, the prior bracket is already closed: nothing is measured
    calls.clear()
    same = search_capacity(measure, BOUND, start_rate=10, max_rate=1000, precision=0.02,
                           prior=measured)
    assert (same.status, same.capacity, calls) == ("found", first.capacity, [])


def test_step_duration_covers_both_minimums():
    from experiments.analysis.capacity import step_duration

    assert step_duration(200.0, 10.0, 500) == 10.0
    assert step_duration(20.0, 10.0, 500) == 25.0
    # a cap shortens only the steps the request count would have lengthened past it
    assert step_duration(2.0, 10.0, 500, 30.0) == 30.0
    assert step_duration(20.0, 10.0, 500, 30.0) == 25.0
    assert step_duration(200.0, 10.0, 500, 30.0) == 10.0


def test_a_short_poisson_schedule_is_held_to_what_it_scheduled():
    # 2/s for 3 s scheduled only 4 arrivals by chance: all 4 sent on time is not a shortfall
    step = StepResult(2.0, 4 / 3, 4, 0, 110.0, 108.0, 0.1, 0, scheduled_rate=4 / 3)
    assert judge(step, BOUND).outcome == "pass"
    assert judge(StepResult(2.0, 1.0, 3, 0, 110.0, 108.0, 0.1, 0, scheduled_rate=4 / 3),
                 BOUND).outcome == "invalid"


def _degrading(short_limit, hold_limit):
    """A system that passes short steps up to short_limit but sustains only hold_limit:
    its backlog builds too slowly to show in a short step (the async collapse of the
    2026-11-30 run)."""
    calls = []

    def measure(rate):
        calls.append(("step", rate))
        return _step(rate, p99=100.0 if rate <= short_limit else 5000.0)

    def confirm(rate):
        calls.append(("hold", rate))
        import dataclasses
        return dataclasses.replace(_step(rate, p99=100.0 if rate <= hold_limit else 5000.0),
                                   hold=True, duration_s=60.0)

    return measure, confirm, calls


def test_the_capacity_is_a_rate_that_passed_a_hold():
    measure, confirm, calls = _degrading(100.0, 80.0)
    r = search_capacity(measure, BOUND, start_rate=10, max_rate=1000, precision=0.05,
                        confirm=confirm, max_holds=6)
    assert r.status == "found"
    assert r.capacity <= 80.0 < r.first_failing <= r.capacity * 1.05
    holds = [rate for kind, rate in calls if kind == "hold"]
    assert holds[-1] == r.capacity and len(holds) >= 2  # the first hold (near 100) failed
    assert any(s["hold"] and s["outcome"] == "fail" for s in r.steps)
    # without holds the same system reads as ~100/s: the overstatement that holds cure
    plain = search_capacity(measure, BOUND, start_rate=10, max_rate=1000, precision=0.05)
    assert plain.capacity > 95.0


def test_a_replay_needs_the_hold_the_live_search_made():
    from experiments.analysis.capacity import replay
    from experiments.protocol import CapacityParams

    measure, confirm, _ = _degrading(100.0, 80.0)
    live = search_capacity(measure, BOUND, start_rate=10, max_rate=1000, precision=0.05,
                           confirm=confirm, max_holds=6)
    steps = [StepResult(**{k: v for k, v in s.items()
                           if k not in ("outcome", "reason", "reused")}) for s in live.steps]
    params = CapacityParams(p99_bound_ms=500, start_rate=10, max_rate=1000, min_step_s=10,
                            precision=0.05, hold_s=60)
    again = replay(params, steps, 500)
    assert (again.status, again.capacity, again.first_failing) == (
        "found", live.capacity, live.first_failing)
    # the short steps alone (holds dropped) vouch for no capacity when holds are required
    short_only = replay(params, [s for s in steps if not s.hold], 500)
    assert short_only.status == "unfinished" and short_only.capacity is None


def test_holds_spent_leave_the_highest_held_rate():
    measure, confirm, _ = _degrading(100.0, 80.0)
    r = search_capacity(measure, BOUND, start_rate=10, max_rate=1000, precision=0.05,
                        confirm=confirm, max_holds=1)
    assert r.status == "unfinished" and r.capacity is None  # the one hold (near 100) failed
    assert r.first_failing is not None and r.first_failing <= 100.0


def test_a_search_out_of_steps_still_holds_its_best_passing_rate():
    # the step budget ends with the bracket open (160 passes, 190 fails): the best passing rate
    # is held, so the result is a vouched lower bound, not "no capacity"
    measure, confirm, calls = _degrading(170.0, 170.0)
    r = search_capacity(measure, BOUND, start_rate=10, max_rate=1000, precision=0.05,
                        max_steps=6, confirm=confirm, max_holds=2)
    assert (r.status, r.capacity) == ("unfinished", 160.0)
    assert calls[-1] == ("hold", 160.0) and r.first_failing == 320.0
    from experiments.analysis.capacity import replay
    from experiments.protocol import CapacityParams

    steps = [StepResult(**{k: v for k, v in s.items()
                           if k not in ("outcome", "reason", "reused")}) for s in r.steps]
    params = CapacityParams(p99_bound_ms=500, start_rate=10, max_rate=1000, min_step_s=10,
                            precision=0.05, hold_s=60, max_steps=6)
    again = replay(params, steps, 500)
    assert (again.status, again.capacity, again.first_failing) == ("unfinished", 160.0, 320.0)


def test_the_report_marks_steps_too_short_for_their_p99():
    from experiments.analysis.capacity import StepResult
    from experiments.reporting import FEW_FOR_P99, capacity_section

    def row(rate, requests):
        return {**StepResult(rate, rate, requests, 0, 50.0, 40.0, 0.1).__dict__,
                "outcome": "pass", "reason": "ok"}

    def text(*steps):
        entry = {"shared": {"p99_bound_ms": 250, "capacity": 2.0, "first_failing": None,
                            "status": "above_range", "steps": list(steps)}}
        return "\n".join(capacity_section({"async": entry}))

    short = text(row(2.0, FEW_FOR_P99 - 52), row(20.0, 400))
    assert f"| {FEW_FOR_P99 - 52} * |" in short and "| 400 |" in short
    assert f"fewer than {FEW_FOR_P99} requests" in short
    assert "fewer than" not in text(row(20.0, 400))


def test_the_report_shows_resent_requests_beside_the_errors():
    from experiments.analysis.capacity import StepResult
    from experiments.reporting import capacity_section

    def text(retried):
        step = {**StepResult(5.0, 5.0, 120, 1, 90.0, 80.0, 0.1, retried=retried).__dict__,
                "outcome": "pass", "reason": "ok"}
        entry = {"shared": {"p99_bound_ms": 250, "capacity": 5.0, "first_failing": None,
                            "status": "above_range", "steps": [step]}}
        return "\n".join(capacity_section({"sync": entry}))

    assert "| 1 (3 resent) |" in text(3) and "keep-alive timer" in text(3)
    assert "resent" not in text(0) and "| 1 |" in text(0)
