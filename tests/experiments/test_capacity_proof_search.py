"""Searching on below a failed proof (issue 21, point 3; capacity key proof_search_on): the
max-performance run at a capacity found counts as one more hold; one that fails (or is
undecided) sends the search on below it and a new proof runs at the new capacity, at most
max_proofs, after which the capacity is a lower bound. The replay from the folders gives the
live run's answer; with the key off everything is as before."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from experiments.analysis.capacity import (
    PROOF_PREFIX,
    StepResult,
    analyse_capacity,
    bound_of,
    judge,
    proof_dirs,
    replay,
    replay_with_proofs,
    search_capacity,
    step_dirs,
    step_result,
)
from experiments.exp3_load.run import _prove
from experiments.protocol import CapacityParams, GuardParams, Scenario
from experiments.reporting import capacity_status, proof_lines

PARAMS = CapacityParams(p99_bound_ms=250, start_rate=50, min_rate=1, max_rate=1000,
                        min_step_s=10, hold_s=30, budget_s=600, proof_search_on=True,
                        max_proofs=2)
BOUND = bound_of(PARAMS, PARAMS.p99_bound_ms)


def _step(rate, p99, *, hold=False, proof=0, duration=None):
    duration = duration or (30.0 if hold else 10.0)
    n = int(rate * duration)
    return StepResult(rate, rate, n, 0, p99, p99, 0.1, hold=hold or bool(proof),
                      duration_s=duration, proof=proof)


def _system(limit):
    """p99 as a stack with a sharp knee at `limit` req/s shows it."""
    return lambda rate: 100.0 if rate <= limit + 1e-9 else 400.0


def _search(p99_of, prior=(), spent_s=0.0):
    return search_capacity(lambda r: _step(r, p99_of(r)), BOUND, start_rate=50,
                           max_rate=1000, min_rate=1, precision=PARAMS.precision,
                           max_steps=PARAMS.max_steps, prior=prior,
                           confirm=lambda r: _step(r, p99_of(r), hold=True),
                           budget_s=PARAMS.budget_s, hold_reserve_s=PARAMS.hold_s,
                           spent_s=spent_s)


def _all(result_steps):
    """The StepResults a search recorded, back from its step records."""
    keys = ("rate", "achieved_rate", "requests", "errors", "p99_response_ms",
            "p99_service_ms", "loadgen_cpu_fraction")
    return [StepResult(*(s[k] for k in keys), hold=s["hold"], duration_s=s["duration_s"],
                       proof=s.get("proof", 0)) for s in result_steps if not s["reused"]]


def test_a_failed_proof_sends_the_search_below_it_and_the_replay_agrees():
    # the short steps and the hold see 100 req/s pass; the longer proof there fails (a stack
    # whose tail drifts): the capacity is what holds below it
    first = _search(_system(100))
    assert first.status == "found" and 95 <= first.capacity <= 100
    steps = _all(first.steps)
    proof1 = _step(first.capacity, 400.0, proof=1)
    spent = sum(s.duration_s for s in [*steps, proof1])
    on = _search(_system(90), prior=[*steps, proof1], spent_s=spent)
    new = _all(on.steps)
    assert new and all(s.hold and s.rate < first.capacity for s in new)  # holds, below it
    assert on.status == "found" and 85 < on.capacity <= 90
    assert on.first_failing <= first.capacity
    # the replay of every step and the failed proof names the same capacity, and the proof
    # at it, passing, leaves it found
    assert replay(PARAMS, [*steps, *new, proof1], 250).capacity == on.capacity
    proof2 = _step(on.capacity, 120.0, proof=2)
    settled = replay_with_proofs(PARAMS, [*steps, *new], [proof1, proof2], 250)
    assert (settled.status, settled.capacity) == ("found", on.capacity)
    assert sorted(s["proof"] for s in settled.steps if s.get("proof")) == [1, 2]


def test_the_search_below_stays_within_what_the_budget_left():
    first = _search(_system(100))
    steps = _all(first.steps)
    proof1 = _step(first.capacity, 400.0, proof=1)
    # with 25 s of 600 left one hold still starts (the step that crosses the budget), no more
    on = _search(_system(90), prior=[*steps, proof1], spent_s=PARAMS.budget_s - 25)
    assert len(_all(on.steps)) == 1
    assert on.status == "unfinished" and on.budget == "time"


def _tail_step(rate, n, over, *, hold=True, proof=0):
    """A step with per-request latencies (what a confidence verdict counts): n requests,
    `over` of them over the bound."""
    lat = np.full(n, 100.0)
    lat[:over] = 400.0
    duration = n / rate
    return StepResult(rate, rate, n, 0, float(np.percentile(lat, 99)),
                      float(np.percentile(lat, 99)), 0.1, hold=hold, duration_s=duration,
                      proof=proof, latency_ms=lat,
                      offset_s=np.linspace(0, duration, n, endpoint=False))


def test_an_undecided_proof_counts_as_not_confirmed():
    # with a confidence, 5 of 1000 requests over the bound is neither pass nor fail: the
    # capacity was not proved, and a capacity errs low, so the search goes on below it
    params = PARAMS.model_copy(update={"confidence": 0.95})
    bound = bound_of(params, 250)
    proof = _tail_step(100, 1000, 5, proof=1)
    assert judge(proof, bound).outcome == "undecided"
    steps = [_tail_step(100, 600, 0, hold=False), _tail_step(100, 3000, 0)]
    assert replay(params, steps, 250).capacity == 100
    settled = replay_with_proofs(params, steps, [proof], 250)
    assert settled.capacity is None  # nothing below the unproved rate has held yet
    asked = []

    def confirm(rate):
        asked.append(rate)
        return _tail_step(rate, 3000, 0 if rate < 90 else 300)

    search_capacity(lambda r: pytest.fail(f"no short step after a failed hold ({r})"), bound,
                    start_rate=50, max_rate=1000, min_rate=1, max_steps=0,
                    prior=[*steps, proof], confirm=confirm, budget_s=600)
    assert asked and asked[0] == pytest.approx(100 / math.sqrt(2))
    assert max(asked) < 100


def test_after_max_proofs_the_capacity_is_a_lower_bound_never_found():
    first = _search(_system(100))
    steps = _all(first.steps)
    proof1 = _step(first.capacity, 400.0, proof=1)
    on = _search(_system(90), prior=[*steps, proof1],
                 spent_s=sum(s.duration_s for s in [*steps, proof1]))
    new = _all(on.steps)
    proof2 = _step(on.capacity, 400.0, proof=2)  # fails too: no third with max_proofs 2
    settled = replay_with_proofs(PARAMS, [*steps, *new], [proof1, proof2], 250)
    assert settled.status == "unfinished" and settled.budget == "proofs"
    assert settled.capacity is not None and settled.capacity < on.capacity
    said = capacity_status(settled.to_dict())
    assert "a lower bound" in said and "proof budget" in said
    # one more allowed: the same folder is a run stopped before its next proof, no budget named
    more = PARAMS.model_copy(update={"max_proofs": 3})
    assert replay_with_proofs(more, [*steps, *new], [proof1, proof2], 250).budget is None


def test_the_key_needs_holds_and_defaults_off():
    base = {"p99_bound_ms": 250, "start_rate": 10, "max_rate": 100, "min_step_s": 5}
    params = CapacityParams(**base)
    assert params.proof_search_on is False and params.max_proofs == 2
    with pytest.raises(ValueError, match="proof_search_on needs hold_s"):
        CapacityParams(**base, proof_search_on=True)
    with pytest.raises(ValueError):
        CapacityParams(**base, hold_s=10, max_proofs=0)
    assert "proof" not in _step(10, 100.0).record()  # a step's record as before


# --------------------------------------------------------------------------- from the folders


def _write(d: Path, step: StepResult, t0: float) -> None:
    """A Locust open-model run folder holding `step`: its request log as the generator
    writes it (every request answered, the slowest 2 % at the step's p99)."""
    d.mkdir(parents=True, exist_ok=True)
    n = step.requests
    scheduled = t0 + np.linspace(0, step.duration_s, n, endpoint=False)
    rt = np.full(n, 50.0)
    rt[: max(1, n // 50)] = step.p99_response_ms
    (d / "result.json").write_text(json.dumps({
        "started_at": t0 - 1, "open_model": {
            "rate": step.rate, "achieved_rate": step.rate, "inflight_cap_hits": 0,
            "scheduled": n, "schedule_s": step.duration_s}}))
    rows = "".join(f"{s:.6f},{r:.1f},200,1,,{s:.6f}\n" for s, r in zip(scheduled, rt,
                                                                         strict=True))
    (d / "requests_1.csv").write_text(
        "start_unix,response_time_ms,status,ok,error,scheduled_unix\n" + rows)


def _live(root: Path, arch: str, first_limit: float, proof_p99: list[float],
          params: CapacityParams) -> dict:
    """Experiment 3's sequence on folders, as experiments/exp3_load/run.py `_prove` runs it:
    the search, the proof, and while a proof fails the search on below and a new proof."""
    arch_dir, mp = root / "capacity" / arch, root / "max_performance" / arch
    arch_dir.mkdir(parents=True)
    clock = [1.7e9]
    p99_of = _system(first_limit)

    def run(rate, hold):
        d = arch_dir / f"{len(step_dirs(arch_dir)):02d}_{rate:.2f}rps{'_hold' if hold else ''}"
        _write(d, _step(rate, p99_of(rate), hold=hold), clock[0])
        clock[0] += 100
        return step_result(d, grace_s=0)

    bound = bound_of(params, params.p99_bound_ms)
    kw = {"start_rate": 50, "max_rate": 1000, "min_rate": 1, "precision": params.precision,
          "max_steps": params.max_steps, "budget_s": params.budget_s,
          "hold_reserve_s": params.hold_s}
    search_capacity(lambda r: run(r, False), bound, confirm=lambda r: run(r, True), **kw)
    capacity = replay(params, [step_result(d, 0) for d in step_dirs(arch_dir)], 250).capacity
    proofs = []
    for n, p99 in enumerate(proof_p99, 1):
        d = mp if n == 1 else mp / f"{PROOF_PREFIX}{n:02d}"
        _write(d, _step(capacity, p99, duration=15.0), clock[0])
        clock[0] += 100
        proofs = [StepResult(**{**step_result(x, 0).__dict__, "hold": True, "proof": i})
                  for i, x in enumerate(proof_dirs(mp), 1)]
        if p99 <= 250 or n >= params.max_proofs:
            break
        p99_of = _system(first_limit * 0.9)  # the stack holds less for longer
        prior = [*(step_result(x, 0) for x in step_dirs(arch_dir)), *proofs]
        search_capacity(lambda r: run(r, False), bound, confirm=lambda r: run(r, True),
                        prior=prior, spent_s=sum(s.duration_s for s in prior), **kw)
        capacity = replay(params, [*(step_result(x, 0) for x in step_dirs(arch_dir)),
                                   *proofs], 250).capacity
    return {"capacity": capacity, "proofs": len(proofs)}


def test_the_report_replays_the_folders_to_the_live_answer(tmp_path):
    live = _live(tmp_path, "async", 100, [400.0, 120.0], PARAMS)
    assert live["proofs"] == 2
    out = analyse_capacity(tmp_path, {"capacity": PARAMS.model_dump()}, grace_s=0)
    shared = out["async"]["shared"]
    assert shared["status"] == "found" and shared["capacity"] == pytest.approx(live["capacity"])
    assert [p["outcome"] for p in shared["proofs"]] == ["fail", "pass"]
    assert shared["proof"]["outcome"] == "pass"
    text = "\n".join(proof_lines(out))
    assert "proof failed at 100.0 req/s (p99 400.0 ms): searched on below; capacity 87." in text
    assert "proof confirmed" in text
    # every folder is a step of the one search or a proof, none written twice
    assert len(step_dirs(tmp_path / "capacity" / "async")) == sum(
        1 for s in shared["steps"] if not s.get("proof"))


def test_with_the_key_off_a_failed_proof_only_says_so(tmp_path):
    params = PARAMS.model_copy(update={"proof_search_on": False})
    live = _live(tmp_path, "sync", 100, [400.0], params)
    out = analyse_capacity(tmp_path, {"capacity": params.model_dump()}, grace_s=0)
    shared = out["sync"]["shared"]
    assert shared["status"] == "found" and shared["capacity"] == pytest.approx(live["capacity"])
    assert shared["proof"]["outcome"] == "fail" and "proofs" not in shared
    assert not any(s.get("proof") for s in shared["steps"])
    assert "the capacity was not one" in "\n".join(proof_lines(out))


class _Lab:
    """The lab as experiment 3's `_prove` drives it: each Locust run writes its folder from a
    stack that holds 100 req/s in the search's steps and holds, but, once a max-performance
    run above 90 req/s has loaded it, only 90 (a tail that drifts with time)."""

    def __init__(self):
        self.limit = 100.0
        self.idle_ms: dict = {}
        self.said: list[str] = []
        self.progress = SimpleNamespace(say=self.said.append)
        self.clock = 1.7e9

    def locust(self, scenario, arch, out, *, arrival, payload, step, label, open_model):
        rate = open_model.rate
        proof = scenario.name == "max_performance"
        p99 = 100.0 if rate <= self.limit + 1e-9 and not (proof and rate > 90) else 400.0
        if proof and rate > 90:
            self.limit = 90.0
        _write(Path(out), _step(rate, p99, duration=scenario.duration_s), self.clock)
        self.clock += 100


def test_experiment_3_proves_searches_on_and_records_what_the_report_replays(tmp_path):
    lab = _Lab()
    arch_dir = tmp_path / "capacity" / "async"
    arch_dir.mkdir(parents=True)

    def run(rate, hold):
        d = arch_dir / f"{len(step_dirs(arch_dir)):02d}_{rate:.2f}rps{'_hold' if hold else ''}"
        _write(d, _step(rate, 100.0 if rate <= 100 else 400.0, hold=hold), lab.clock)
        lab.clock += 100
        return step_result(d, grace_s=0)

    search_capacity(lambda r: run(r, False), BOUND, confirm=lambda r: run(r, True),
                    start_rate=50, max_rate=1000, min_rate=1, budget_s=PARAMS.budget_s,
                    hold_reserve_s=PARAMS.hold_s)
    first = replay(PARAMS, [step_result(d, 0) for d in step_dirs(arch_dir)], 250).capacity
    planned = Scenario(name="max_performance", kind="open", rate=first, duration_s=15)
    lab.locust(planned, "async", tmp_path / "max_performance" / "async", arrival="open",
               payload=None, step=1, label="", open_model=SimpleNamespace(rate=first))
    protocol = SimpleNamespace(capacity=PARAMS, guard=GuardParams(grace_s=0), payload=None,
                               pause_s=0)
    entry = _prove(lab, protocol, "async", 1, tmp_path, planned, 3, "",
                   {"shared": {"hint_rate": 64.0}})
    shared = entry["shared"]
    assert [p["outcome"] for p in shared["proofs"]] == ["fail", "pass"]
    assert shared["status"] == "found" and 85 < shared["capacity"] <= 90
    assert (tmp_path / "max_performance" / "async" / "proof_02" / "result.json").exists()
    assert any("searching on below" in m for m in lab.said)
    # the report, from the folders alone, says exactly what the live run recorded
    replayed = analyse_capacity(tmp_path, {"capacity": PARAMS.model_dump()}, grace_s=0)
    assert {**replayed["async"]["shared"], "hint_rate": 64.0} == shared
