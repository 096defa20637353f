"""Trust in a capacity: the p99 verdict with a confidence (pass / fail / undecided, extended),
a search that closes after a failed hold within a time budget, a drifting hold failed on its
last third, and seeds per repeat shared by the architectures (issue 21)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from experiments.analysis.capacity import Bound, StepResult, judge, search_capacity
from experiments.analysis.tail import (
    exceedance_bounds,
    requests_to_decide,
    requests_to_pass,
    tail_verdict,
)
from experiments.load.arrivals import ArrivalProcess, OpenModel
from experiments.protocol import CapacityParams, seed_of

BOUND = Bound(p99_ms=250, confidence=0.95)


def _step(rate, latency_ms, *, hold=False, duration=None):
    lat = np.asarray(latency_ms, dtype=float)
    duration = duration or len(lat) / rate
    finite = np.where(np.isfinite(lat), lat, 1e9)
    return StepResult(rate, rate, len(lat), int(np.isinf(lat).sum()),
                      float(np.percentile(finite, 99)), float(np.percentile(finite, 99)), 0.1,
                      hold=hold, duration_s=duration, latency_ms=lat,
                      offset_s=np.linspace(0, duration, len(lat), endpoint=False))


def _latencies(n, over, *, slow=400.0, fast=100.0, seed=0):
    """n latencies, `over` of them over the bound, in random order."""
    lat = np.full(n, fast)
    lat[:over] = slow
    return np.random.default_rng(seed).permutation(lat)


# --------------------------------------------------------------------------- the verdict


def test_clopper_pearson_bounds_have_their_coverage():
    # the one-sided upper bound at 95 %: P(upper < q) <= 5 % for a true share q
    n, q = 300, 0.02
    ks = np.arange(n + 1)
    below = [exceedance_bounds(int(k), n, 0.95)[1] < q for k in ks]
    assert binom.pmf(ks, n, q)[below].sum() <= 0.05
    lower = [exceedance_bounds(int(k), n, 0.95)[0] > q for k in ks]
    assert binom.pmf(ks, n, q)[lower].sum() <= 0.05


def test_a_step_passes_only_with_enough_requests_none_over():
    assert requests_to_pass() == 299  # 1 - 0.05^(1/n) <= 1 %
    assert tail_verdict(0, 298).outcome == "undecided"
    assert tail_verdict(0, 299).outcome == "pass"
    n1 = requests_to_pass(over=1)
    assert tail_verdict(1, n1).outcome == "pass" and tail_verdict(1, n1 - 1).outcome != "pass"
    assert 450 < n1 < 500


@pytest.mark.parametrize(("over", "n", "outcome"), [
    (0, 1000, "pass"),       # share 0 %
    (5, 1000, "undecided"),  # 0.5 %: its 95 % upper bound is 1.05 %, just over
    (3, 1000, "pass"),       # 0.3 %: upper bound 0.78 %
    (10, 1000, "undecided"),  # exactly at 1 %
    (30, 1000, "fail"),      # 3 %
    (3, 200, "undecided"),   # 1.5 % of a short step: could be either
    (8, 200, "fail"),        # 4 %
])
def test_verdict_on_known_counts(over, n, outcome):
    assert tail_verdict(over, n).outcome == outcome


def test_a_step_at_the_bound_is_never_decided_and_its_extension_is_none():
    assert requests_to_decide(10, 1000) is None
    m = requests_to_decide(5, 1000)  # 0.5 %: decided as pass with enough requests
    assert m is not None and tail_verdict(round(0.005 * m), m).outcome == "pass"


def test_judge_with_confidence_near_the_bound():
    # p99 as a point estimate is within the bound, but 3 of 200 over: undecided
    lat = _latencies(200, 2)
    v = judge(_step(20, lat), BOUND)
    assert v.outcome == "undecided" and v.tail["over"] == 2 and v.tail["n"] == 200
    assert judge(_step(20, lat), Bound(p99_ms=250)).outcome == "pass"  # no confidence: as before
    assert judge(_step(20, _latencies(400, 0)), BOUND).outcome == "pass"
    assert judge(_step(20, _latencies(400, 20)), BOUND).outcome == "fail"


def test_a_failed_request_counts_as_over_the_bound():
    lat = _latencies(400, 0)
    lat[:20] = np.inf  # 5 % failed fast: no answer within the bound
    v = judge(_step(20, lat), Bound(p99_ms=250, confidence=0.95, max_error_fraction=1.0))
    assert v.outcome == "fail" and v.tail["over"] == 20


def test_a_hold_whose_tail_drifts_fails_on_its_last_third():
    # 6,000 requests, 0.5 % over: the whole hold passes, but all 32 are in its last third
    # (1.6 % of it): a queue that grows at the end
    lat = np.full(6000, 100.0)
    lat[-32:] = 900.0
    hold = _step(50, lat, hold=True)
    assert tail_verdict(*hold.over(250)).outcome == "pass"
    v = judge(hold, BOUND)
    assert v.outcome == "fail" and "drifting" in v.reason
    # the same requests in a short step are judged on the whole only
    assert judge(_step(50, lat), BOUND).outcome != "fail"


def test_window_p99_shows_the_drift():
    lat = np.concatenate([np.full(500, 80.0), np.full(500, 600.0)])
    windows = _step(100, lat, duration=10.0).window_p99_ms(5.0)
    assert windows == [80.0, 600.0]


# --------------------------------------------------------------------------- the search


def _stack(capacity, *, hold_capacity=None, noise_band=0.0):
    """A fake stack: short steps pass up to `capacity`, holds up to `hold_capacity` (a stack
    that degrades slowly); within noise_band of a limit, steps come out undecided unless
    they are long (an extension: duration > 30 s)."""
    calls = []

    def outcome_step(rate, hold, long):
        limit = hold_capacity if hold and hold_capacity else capacity
        n = 3000 if long else 400
        if abs(rate / limit - 1) < noise_band and not long:
            over = round(0.01 * n)  # right at the bound: undecided
        else:
            over = 0 if rate <= limit else n // 10
        calls.append((round(rate, 2), "hold" if hold else "step", long))
        return _step(rate, _latencies(n, over), hold=hold, duration=60 if long else 20)

    return outcome_step, calls


def test_an_undecided_step_is_measured_again_longer_and_superseded():
    make, calls = _stack(100, noise_band=0.08)
    r = search_capacity(lambda rate: make(rate, False, False), BOUND, start_rate=50,
                        max_rate=1000, precision=0.05,
                        extend=lambda rate, hold, n: make(rate, hold, True))
    assert r.status == "found" and r.capacity <= 100 < r.first_failing <= r.capacity * 1.05
    undecided = [s for s in r.steps if s["outcome"] == "undecided"]
    assert undecided and all(s.get("superseded") for s in undecided)
    assert any(long for _, _, long in calls)


def test_an_undecided_rate_without_extension_counts_as_not_passed():
    make, _ = _stack(100, noise_band=0.5)
    r = search_capacity(lambda rate: make(rate, False, False), BOUND, start_rate=20,
                        max_rate=1000, precision=0.05)
    # everything from 50 up is undecided: the capacity is the highest clear pass, below 50
    assert r.status == "found" and r.capacity < 50 <= r.first_failing * 1.05 + 1e-9


def test_the_search_closes_after_a_failed_hold_within_its_time_budget():
    # short steps pass up to 400, holds only up to 290 (the issue's sync gthread): the old
    # search stopped at the failed hold's rate / sqrt(growth) with max_holds = 2
    make, calls = _stack(400, hold_capacity=290)
    kwargs = dict(start_rate=100, max_rate=2000, precision=0.05, growth=2.0)
    old = search_capacity(lambda r: make(r, False, False), BOUND, **kwargs, max_holds=2,
                          confirm=lambda r: make(r, True, False))
    assert old.status == "unfinished" and old.budget == "holds"
    failed_hold = min(s["rate"] for s in old.steps if s["hold"] and s["outcome"] == "fail")
    assert old.capacity == pytest.approx(failed_hold / math.sqrt(2))  # the search's floor
    new = search_capacity(lambda r: make(r, False, False), BOUND, **kwargs, max_holds=2,
                          confirm=lambda r: make(r, True, False), budget_s=1000)
    assert new.status == "found", new.steps[-1]
    assert new.capacity <= 290 < new.first_failing <= new.capacity * 1.05


def test_a_spent_time_budget_leaves_a_labelled_lower_bound():
    make, _ = _stack(400, hold_capacity=290)
    r = search_capacity(lambda rate: make(rate, False, False), BOUND, start_rate=100,
                        max_rate=2000, precision=0.01, confirm=lambda r: make(r, True, False),
                        budget_s=150)
    assert r.status == "unfinished" and r.budget == "time"
    assert sum(s["duration_s"] for s in r.steps) >= 150


# --------------------------------------------------------------------------- randomness


def test_seeds_differ_per_repeat_and_are_shared_within_one():
    params = CapacityParams(p99_bound_ms=250, start_rate=10, max_rate=100, min_step_s=5,
                            seeds="per_repeat")
    seeds = {params.seed_of(k) for k in range(1, 6)}
    assert len(seeds) == 5 and seed_of(1, 2) == params.seed_of(2)
    # one repeat: both architectures, every step, the same seed
    fixed = CapacityParams(p99_bound_ms=250, start_rate=10, max_rate=100, min_step_s=5)
    assert {fixed.seed_of(k) for k in range(1, 4)} == {1}
    with pytest.raises(ValueError, match="repeat must be >= 1"):
        seed_of(1, 0)


def test_common_random_numbers_across_architectures_and_rates():
    # the schedule depends on the seed and rate only, never on the architecture: two
    # architectures at one rate in one repeat get the same times; at another rate the same
    # standard exponentials, scaled
    a = ArrivalProcess(100, seed=seed_of(1, 3)).times(10)
    b = ArrivalProcess(100, seed=seed_of(1, 3)).times(10)
    assert np.array_equal(a, b)
    c = ArrivalProcess(200, seed=seed_of(1, 3)).times(5)
    assert np.allclose(c[: len(a) // 2], a[: len(a) // 2] / 2)
    assert not np.array_equal(a, ArrivalProcess(100, seed=seed_of(1, 4)).times(10))


def test_a_nominal_count_schedule_offers_exactly_its_rate():
    for seed in range(5):
        p = ArrivalProcess(37.5, seed=seed, nominal_count=True)
        times = p.times(8.0)
        assert len(times) == 300 and np.all(np.diff(times) >= 0) and times.max() < 8.0
        streams = [s.times(8.0) for s in p.split(4)]
        assert abs(sum(map(len, streams)) - 300) <= 2
    assert OpenModel(10, nominal_count=True).stream(0, 1).nominal_count


def test_capacity_against_hold_length_from_holds_cut_short():
    from experiments.analysis.capacity import capacity_by_hold_length

    # holds of 60 s at 80, 100, 120 req/s: 100 drifts after 20 s (its first 15 s pass),
    # 120 is over from the start
    def hold(rate, drift_from_s):
        n = int(rate * 60)
        offsets = np.linspace(0, 60, n, endpoint=False)
        lat = np.where(offsets >= drift_from_s, 900.0, 100.0)
        return StepResult(rate, rate, n, 0, 0.0, 0.0, 0.1, hold=True, duration_s=60.0,
                          latency_ms=lat, offset_s=offsets)

    steps = [hold(80, 1e9), hold(100, 20.0), hold(120, 0.0)]
    rows = {r["hold_s"]: r for r in capacity_by_hold_length(steps, BOUND)}
    assert set(rows) == {15.0, 30.0, 60.0}  # no hold lasted 120 s
    assert (rows[15.0]["capacity"], rows[15.0]["first_not_passed"]) == (100, 120)
    assert (rows[30.0]["capacity"], rows[30.0]["first_not_passed"]) == (80, 100)
    assert rows[60.0]["capacity"] == 80


def test_a_cut_hold_whose_last_third_drifts_fails_as_the_search_fails_it():
    from experiments.analysis.capacity import capacity_by_hold_length

    # 60 s at 100 req/s: 40 requests over the bound, all in the last 15 s. The whole hold's
    # share (40 of 6000) passes at 95 %, its last third's (40 of 2000) fails: the search fails
    # the hold, and so must the table's 60 s column; cut at 30 s, nothing is over
    n = 6000
    offsets = np.linspace(0, 60, n, endpoint=False)
    lat = np.full(n, 100.0)
    lat[np.flatnonzero(offsets >= 45)[::37][:40]] = 900.0
    h = StepResult(100, 100, n, 0, 0.0, 0.0, 0.1, hold=True, duration_s=60.0,
                   latency_ms=lat, offset_s=offsets)
    assert tail_verdict(40, n).outcome == "pass" and judge(h, BOUND).outcome == "fail"
    rows = {r["hold_s"]: r for r in capacity_by_hold_length([h], BOUND)}
    assert rows[30.0]["capacity"] == 100
    assert (rows[60.0]["capacity"], rows[60.0]["first_not_passed"]) == (None, 100)


def test_the_search_goes_no_lower_than_a_step_can_decide_at():
    from experiments.analysis.capacity import decidable_rate

    params = dict(p99_bound_ms=250, start_rate=10, max_rate=100, min_step_s=5, max_step_s=20)
    assert decidable_rate(CapacityParams(**params)) == 1.0  # no confidence: min_rate
    trust = CapacityParams(**params, confidence=0.95, extend_max_s=60)
    assert decidable_rate(trust) == pytest.approx(299 / 60)


def test_a_live_step_is_long_enough_to_pass_at_all():
    from experiments.analysis.capacity import planned_step_s

    params = dict(p99_bound_ms=250, start_rate=10, max_rate=100, min_step_s=8,
                  min_requests=300, max_step_s=40)
    # no confidence: max_step_s cuts a slow step short (200 requests at 5 req/s)
    assert planned_step_s(5.0, CapacityParams(**params)) == 40.0
    trust = CapacityParams(**params, confidence=0.95, extend_max_s=120)
    # with one, the step runs until its 299 requests could pass, not 40 s then again
    assert planned_step_s(5.0, trust) == pytest.approx(299 / 5.0)
    # never longer than the longest step allowed
    assert planned_step_s(2.0, trust) == 120.0
    # fast steps are as before (min_step_s, min_requests)
    assert planned_step_s(100.0, trust) == 8.0
    assert planned_step_s(20.0, trust) == pytest.approx(15.0)


def test_a_capacity_is_confirmed_only_by_its_max_performance_run(tmp_path):
    from experiments.reporting import capacity_headline, proof_lines

    entry = {"shared": {"capacity": 9.8, "status": "found", "first_failing": 10.3,
                        "proof": {"rate": 9.8, "outcome": "fail", "requests": 452,
                                  "reason": "p99 275 ms > 250 ms", "p99_response_ms": 275.5,
                                  "window_p99_ms": [188, None, 307]}}}
    assert capacity_headline(entry)["capacity_confirmed"] is False
    text = "\n".join(proof_lines({"sync": entry}))
    assert "**not confirmed (fail)**: the capacity was not one" in text
    assert "p99 per 5 s: 188, failed, 307" in text
    entry["shared"]["proof"]["outcome"] = "pass"
    assert capacity_headline(entry)["capacity_confirmed"] is True
    del entry["shared"]["proof"]
    assert "capacity_confirmed" not in capacity_headline(entry)


def test_the_last_of_a_time_budget_is_kept_for_a_hold():
    # short steps of 60 s at a precision the budget cannot reach: without a reserve the budget
    # goes to short steps and nothing is held; with it, the best passing rate is held
    make, calls = _stack(100)

    def long_step(rate):
        return _step(rate, _latencies(6000, 0 if rate <= 100 else 600), duration=60)

    kwargs = dict(start_rate=40, max_rate=2000, precision=0.001, growth=1.5, budget_s=300,
                  confirm=lambda r: make(r, True, False))

    def spent_s(result):
        return sum(s["duration_s"] for s in result.steps)

    # without a reserve the short steps spend it all; the best passing rate is still held
    # once, past the budget by that hold
    spent = search_capacity(long_step, BOUND, **kwargs)
    assert (spent.status, spent.budget) == ("unfinished", "time")
    assert spent.capacity is not None and spent.capacity <= 100
    assert spent_s(spent) > 300
    # with it, the hold comes within the budget
    kept = search_capacity(long_step, BOUND, hold_reserve_s=60, **kwargs)
    assert (kept.status, kept.budget) == ("unfinished", "time")
    assert kept.capacity is not None and kept.capacity <= 100
    assert kept.steps[-1]["hold"] and kept.steps[-1]["outcome"] == "pass"
    assert spent_s(kept) <= 300


def test_an_extension_does_not_eat_the_hold_reserve():
    # passes to 50, undecided to 100 in a short step (an extension would pass it): with the
    # budget nearly spent, the undecided step is left undecided and 40 req/s is held instead
    # of a 120 s extension that would leave no time to hold anything
    def measure(rate):
        return _step(rate, _latencies(400, 0 if rate <= 50 else 4 if rate <= 100 else 40),
                     duration=20)

    extended = []

    def extend(rate, hold, n):
        extended.append(rate)
        return _step(rate, _latencies(3000, 0 if rate <= 100 else 300), hold=hold,
                     duration=120)

    r = search_capacity(measure, BOUND, start_rate=40, max_rate=1000, precision=0.05,
                        growth=2.0, budget_s=100, hold_reserve_s=60, extend=extend,
                        confirm=lambda rate: _step(rate, _latencies(1200, 0), hold=True,
                                                   duration=60))
    assert extended == []
    assert (r.status, r.capacity, r.budget) == ("unfinished", 40, "time")
    assert [s["outcome"] for s in r.steps] == ["pass", "undecided", "pass"]
    assert sum(s["duration_s"] for s in r.steps) <= 100


def test_an_extension_as_long_as_a_hold_counts_as_one():
    # near its limit a short step is undecided and its 60 s extension decides it: with
    # long_step_s = 60 that extension vouches for the rate as a hold would, and no hold runs
    make, calls = _stack(100, noise_band=0.08)
    kwargs = dict(start_rate=50, max_rate=1000, precision=0.05,
                  confirm=lambda r: make(r, True, False),
                  extend=lambda rate, hold, n: make(rate, hold, True))
    before = search_capacity(lambda r: make(r, False, False), BOUND, **kwargs)
    holds_before = sum(kind == "hold" for _, kind, _ in calls)
    calls.clear()
    after = search_capacity(lambda r: make(r, False, False), BOUND, long_step_s=60, **kwargs)
    assert holds_before > 0 and not any(kind == "hold" for _, kind, _ in calls)
    for r in (before, after):
        assert r.status == "found" and r.capacity <= 100 < r.first_failing
    assert after.first_failing <= after.capacity * 1.05
    vouching = [s for s in after.steps if s["rate"] == after.capacity and s["outcome"] == "pass"]
    assert vouching and all(s["duration_s"] >= 60 for s in vouching)


def test_the_report_names_the_rates_left_undecided():
    from experiments.reporting import capacity_status

    steps = [{"rate": 5.0, "outcome": "pass"}, {"rate": 5.5, "outcome": "undecided"},
             {"rate": 5.9, "outcome": "undecided", "superseded": True},
             {"rate": 5.9, "outcome": "undecided"}, {"rate": 7.1, "outcome": "fail"}]
    said = capacity_status({"status": "found", "steps": steps})
    assert said.endswith("(undecided at 5.5-5.9 req/s; confidently over from 7.1: counted as "
                         "not passed)")
    assert capacity_status({"status": "found", "steps": steps[:1]}) == "found"


def test_an_unfinished_search_is_a_lower_bound_only_when_a_rate_passed():
    from experiments.reporting import capacity_status

    # experiment 7's sync on demand without a device limit (20261207T171819Z): the time
    # budget ran out with 5.0-7.1 undecided and 10.0 failed; nothing passed
    steps = [{"rate": 5.0, "outcome": "undecided"}, {"rate": 7.1, "outcome": "undecided"},
             {"rate": 10.0, "outcome": "fail"}]
    said = capacity_status({"status": "unfinished", "budget": "time", "capacity": None,
                            "steps": steps})
    assert said.startswith("**no capacity**: the time budget") and "lower bound" not in said
    passed = capacity_status({"status": "unfinished", "budget": "holds", "capacity": 5.0,
                              "steps": [{"rate": 5.0, "outcome": "pass"}, *steps[1:]]})
    assert passed.startswith("**a lower bound**: the hold budget")
