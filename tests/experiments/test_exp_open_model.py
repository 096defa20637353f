"""Open-model load through real Locust against a slow fake endpoint (one request at a time,
50 ms each: 20 req/s at most). Offered 30 req/s, the open model's response time (from the
scheduled send) includes the queue that builds up, while its service time (from the actual
send) and a closed-loop run of the same endpoint stay near 50 ms: coordinated omission,
shown and measured."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.analysis.history import read_requests
from experiments.load.arrivals import OpenModel
from experiments.load.run import run_locust
from experiments.protocol import Scenario
from tests.experiments.fake_endpoint import score_server

HOLD_S = 0.05


@pytest.fixture
def slow_server():
    with score_server(hold_s=HOLD_S, one_at_a_time=True) as url:
        yield url


@pytest.mark.slow
def test_open_model_counts_the_queue_a_closed_loop_hides(slow_server, tmp_path):
    schedule_s, rate = 6.0, 30.0
    # One request in flight at a time, like one closed-loop user: the generator has to wait
    # for each answer, so sends fall behind the schedule. Counted, and response time runs
    # from the schedule.
    model = OpenModel(rate=rate, seed=4, inflight_cap=1, request_timeout_s=15.0)
    scenario = Scenario(name="open", kind="constant", users=1, duration_s=schedule_s)
    open_run = run_locust(scenario, slow_server, "/p", tmp_path / "open", timeout_margin_s=40,
                          open_model=model, seed=1)
    assert open_run.exit_code in (0, 1), (tmp_path / "open" / "locust.log").read_text()[-2000:]
    counts = open_run.open_model
    assert counts["streams_reported"] == 1 and counts["rate"] == rate
    assert counts["scheduled"] == pytest.approx(rate * schedule_s, abs=4 * np.sqrt(180))
    assert counts["inflight_cap_hits"] > 0.2 * counts["scheduled"]  # reported, not silent
    assert counts["achieved_rate"] < 0.9 * rate

    reqs = read_requests(tmp_path / "open")
    assert reqs.open_model and len(reqs) == counts["scheduled"]
    service_p99 = float(np.percentile(reqs.service_ms, 99))
    response_p99 = float(np.percentile(reqs.response_ms, 99))
    # At 30/s offered and 20/s served for 6 s, the last requests wait about 2 s behind
    # schedule; the service time of each is one hold (plus loopback overhead).
    assert response_p99 > 1000
    assert service_p99 < 500
    assert np.all(reqs.response_ms >= reqs.service_ms - 1e-6)

    # A closed loop at the same nominal rate (1 user, a request every 1/30 s) only ever
    # sees one request at a time: its latencies look like the service time.
    closed = Scenario(name="closed", kind="constant", users=1, spawn_rate=1.0,
                      duration_s=schedule_s, pacing_s=1 / rate)
    closed_run = run_locust(closed, slow_server, "/p", tmp_path / "closed", timeout_margin_s=40,
                            seed=1)
    assert closed_run.open_model is None
    closed_reqs = read_requests(tmp_path / "closed")
    assert not closed_reqs.open_model
    assert float(np.percentile(closed_reqs.response_ms, 99)) < 500 < response_p99


@pytest.mark.slow
def test_capacity_search_finds_the_configured_ceiling(slow_server, tmp_path):
    """One blocking worker holding each request HOLD_S: its ceiling is 1 / HOLD_S = 20 req/s.
    Constant arrivals queue only above that rate, so the highest rate whose p99 response time
    stays within a few holds is the ceiling; the search, with real Locust steps, must land
    within 15 % of it."""
    from experiments.analysis.capacity import Bound, search_capacity, step_result

    ceiling = 1 / HOLD_S
    steps = []

    def measure(rate: float):
        out = tmp_path / f"step{len(steps)}"
        model = OpenModel(rate=rate, process="constant", seed=2, drain_s=1.5)
        scenario = Scenario(name="capacity", kind="constant", users=1, duration_s=5.0)
        run = run_locust(scenario, slow_server, "/p", out, timeout_margin_s=30,
                         open_model=model, seed=1)
        assert run.exit_code in (0, 1), (out / "locust.log").read_text()[-2000:]
        steps.append(out)
        return step_result(out)

    result = search_capacity(measure, Bound(p99_ms=6 * HOLD_S * 1000), start_rate=5,
                             max_rate=80, precision=0.08, max_steps=10)
    assert result.status == "found", result.steps
    assert 0.85 * ceiling <= result.capacity <= 1.15 * ceiling, result.steps
    # every step sent its schedule: the generator never limited the result
    assert all(s["achieved_rate"] >= 0.95 * s["rate"] for s in result.steps)


@pytest.mark.slow
def test_a_request_closed_unanswered_is_resent_once_and_counted(tmp_path):
    """Every 7th request's connection is closed without an answer. The open model sends each
    such request once more and counts the resends; a closed-loop run (the original's
    protocol, no resends) shows the same drops as errors."""
    drop_every, rate, schedule_s = 7, 12.0, 4.0
    with score_server(hold_s=0.01, drop_every=drop_every) as url:
        model = OpenModel(rate=rate, process="constant", seed=3, request_timeout_s=10.0)
        scenario = Scenario(name="open", kind="constant", users=1, duration_s=schedule_s)
        run = run_locust(scenario, url, "/p", tmp_path / "open", timeout_margin_s=30,
                         open_model=model, seed=1)
        assert run.exit_code in (0, 1), (tmp_path / "open" / "locust.log").read_text()[-2000:]
        reqs = read_requests(tmp_path / "open")
        counts = run.open_model
        # one row per scheduled request, however many tries it took
        assert len(reqs) == counts["scheduled"]
        # the server saw sent + resent requests and dropped every 7th of them
        assert counts["retried_closed"] >= (counts["scheduled"] // drop_every) - 1 > 0
        assert reqs.failures <= 1  # a resend itself dropped (two drops in a row) fails

        closed = Scenario(name="closed", kind="constant", users=1, spawn_rate=1.0,
                          duration_s=schedule_s, pacing_s=1 / rate)
        run_locust(closed, url, "/p", tmp_path / "closed", timeout_margin_s=30, seed=1)
        closed_reqs = read_requests(tmp_path / "closed")
        assert closed_reqs.failures >= len(closed_reqs) // drop_every - 1 > 0


@pytest.mark.slow
def test_a_confident_search_through_real_locust_replays_to_the_same_answer(tmp_path):
    """The trust protocol end to end on real Locust folders: Poisson schedules with their
    nominal count, verdicts with a 95 % confidence (undecided steps measured again, longer),
    holds, a time budget; then the report's replay of the step folders alone gives the live
    search's answer (one answer per search). One blocking worker holding each request 10 ms:
    100 req/s at most."""
    from experiments.analysis.capacity import (
        HOLD_SUFFIX,
        bound_of,
        replay,
        search_capacity,
        step_dirs,
        step_result,
    )
    from experiments.protocol import CapacityParams

    params = CapacityParams(p99_bound_ms=80, start_rate=40, min_rate=5, max_rate=200,
                            growth=1.5, precision=0.15, max_steps=8, min_step_s=4,
                            min_requests=300, max_step_s=6, hold_s=6, extend_max_s=12,
                            confidence=0.95, budget_s=90, seeds="per_repeat",
                            nominal_count=True, drain_s=1.0)
    arch_dir = tmp_path / "capacity" / "sync"
    arch_dir.mkdir(parents=True)

    def run_step(rate: float, duration: float, hold: bool):
        kind = HOLD_SUFFIX if hold else ""
        out = arch_dir / f"{len(step_dirs(arch_dir)):02d}_{rate:.2f}rps{kind}"
        model = OpenModel(rate=rate, seed=params.seed_of(2), drain_s=params.drain_s,
                          nominal_count=True)
        scenario = Scenario(name="capacity", kind="open", rate=rate, duration_s=duration)
        run = run_locust(scenario, url, "/p", out, timeout_margin_s=30, open_model=model,
                         seed=1)
        assert run.exit_code in (0, 1), (out / "locust.log").read_text()[-2000:]
        return step_result(out)

    with score_server(hold_s=0.01, one_at_a_time=True) as url:
        live = search_capacity(
            lambda r: run_step(r, max(4.0, min(300 / r, 6.0)), False),
            bound_of(params, params.p99_bound_ms), start_rate=40, max_rate=200, min_rate=5,
            growth=1.5, precision=0.15, max_steps=8,
            confirm=lambda r: run_step(r, 6.0, True),
            extend=lambda r, hold, n: run_step(r, 12.0, hold), budget_s=90)
    assert live.status in ("found", "unfinished"), live.steps
    # every step offered exactly its nominal count
    for d in step_dirs(arch_dir):
        s = step_result(d)
        assert abs(s.requests - round(s.rate * s.duration_s)) <= 1, d.name
    again = replay(params, [step_result(d) for d in step_dirs(arch_dir)], params.p99_bound_ms)
    assert (again.status, again.capacity, again.first_failing) == \
        (live.status, live.capacity, live.first_failing)
    if live.status == "found":
        assert live.capacity <= 110
