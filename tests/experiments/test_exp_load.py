"""Load shapes (pure stages, and the Locust shape classes in a subprocess) and pacing."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.exp3_load import EXPERIMENT as EXP3
from experiments.load.pacing import Pacer, simulate_arrivals
from experiments.load.stages import Stage, stages_for, tick_at, users_at
from experiments.protocol import Scenario

ROOT = Path(__file__).resolve().parents[2]


def test_constant_tick_at_given_times():
    # the original's stress test (the full profile's is shorter, sized for its repeats)
    s = Scenario(name="stress", kind="constant", users=500, spawn_rate=5.0, duration_s=100)
    stages = stages_for(s)
    assert stages == [Stage(100.0, 500, 5.0)]
    assert tick_at(stages, 0) == (500, 5.0)
    assert tick_at(stages, 99.9) == (500, 5.0)
    assert tick_at(stages, 100) is None


def test_ramp_tick_at_given_times():
    # the original's load test: 1 -> 300 users, one more every second
    lt = Scenario(name="load_test", kind="ramp", start_users=1, end_users=300, step_users=1,
                  step_interval_s=1.0)
    stages = stages_for(lt)
    assert len(stages) == 300
    assert tick_at(stages, 0) == (1, 1.0)
    assert tick_at(stages, 0.99)[0] == 1
    assert tick_at(stages, 1.0)[0] == 2
    assert tick_at(stages, 149.5)[0] == 150
    assert tick_at(stages, 299.5)[0] == 300
    assert tick_at(stages, 300) is None
    assert users_at(stages, -1) == 0


def test_stepped_ramp_caps_at_end_users_and_holds():

    lt = EXP3.configure("smoke").scenario("load_test").model_copy(update={"hold_s": 3.0})
    stages = stages_for(lt)
    assert [s.users for s in stages] == [1, 3, 5, 7, 8, 8]
    assert tick_at(stages, 9.5) == (8, 2.0)
    assert tick_at(stages, 12.5)[0] == 8
    assert tick_at(stages, 13.0) is None


def test_unresolved_breaking_point_scenario_refuses_stages():
    mp = Scenario(name="max_performance", kind="constant", users_from="breaking_point",
                  spawn_rate=5.0, duration_s=4.0)
    with pytest.raises(ValueError, match="with_users"):
        stages_for(mp)
    assert stages_for(mp.with_users(12))[0].users == 12


def test_open_model_scenarios_have_no_user_stages():
    open_mp = EXP3.configure("smoke").scenario("max_performance")
    for scenario in (open_mp, open_mp.with_rate(5.0), EXP3.configure("smoke").scenario("capacity")):
        with pytest.raises(ValueError, match="open model"):
            stages_for(scenario)


def test_locust_shape_classes_tick(tmp_path):
    # Locust monkey-patches on import: check the shape classes in a separate interpreter.
    code = """
import json
from experiments.load import shapes
from experiments.load.stages import stages_for
from experiments.protocol import Scenario
from dataclasses import asdict
lt = Scenario(name="load_test", kind="ramp", start_users=1, end_users=200, step_users=5,
              step_interval_s=2.0)
cls = shapes.shape_for({"scenario": lt.to_dict(), "stages": [asdict(s) for s in stages_for(lt)]})
shape = cls()
shape.get_run_time = lambda: 5.0
print(json.dumps({"base": cls.__mro__[1].__name__, "t5": shape.tick(), "t81": shape.tick_at(81.9),
                  "end": shape.tick_at(82.0), "duration": shape.duration_s}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    d = json.loads(out.stdout.strip().splitlines()[-1])
    assert d["base"] == "RampShape"
    assert d["t5"] == [11, 5.0]  # step 2 (t in [4, 6)): 1 + 2 x 5 users
    assert d["t81"][0] == 200 and d["end"] is None and d["duration"] == 82.0


def test_spread_offsets_cover_the_period_bursty_has_none():
    rng = random.Random(1)
    spread = [Pacer(1.0, "spread", rng).offset_s for _ in range(500)]
    assert all(0 <= o < 1.0 for o in spread)
    assert min(spread) < 0.05 and max(spread) > 0.95
    assert {Pacer(1.0, "bursty", rng).offset_s for _ in range(10)} == {0.0}
    with pytest.raises(ValueError):
        Pacer(1.0, "random")


def test_pacing_keeps_the_offset_phase():
    p = Pacer(1.0, "spread", random.Random(3))
    off = p.start(100.0)
    first = 100.0 + off
    # request takes 0.2 s: the next one leaves exactly one period after the first
    assert p.wait(first + 0.2) == pytest.approx(0.8)
    # a request that overruns the period: go at once and re-anchor
    assert p.wait(first + 1.0 + 1.5) == 0.0
    assert p.wait(first + 2.5 + 0.1) == pytest.approx(0.9)


def test_spread_arrivals_are_spread_bursty_arrivals_are_bursts():
    def max_in_window(times, w=0.1):
        j, best = 0, 0
        for i, t in enumerate(times):
            while times[j] < t - w:
                j += 1
            best = max(best, i - j + 1)
        return best

    n = 50
    spread = simulate_arrivals(n, periods=5, arrival="spread", seed=2, service_s=0.1)
    bursty = simulate_arrivals(n, periods=5, arrival="bursty", seed=2, service_s=0.1)
    assert len(spread) == len(bursty) == 250
    assert max_in_window(bursty) == n  # all users in phase: one burst per second
    assert max_in_window(spread) <= n // 3  # about n/10 per 100 ms
    # both offer n requests per second over the run
    assert spread[-1] - spread[0] < 5.0 and bursty[-1] - bursty[0] == pytest.approx(4.0)
