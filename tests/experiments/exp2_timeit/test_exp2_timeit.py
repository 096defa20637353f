"""Experiment 2's protocol file, schedule and statistics (no lab needed)."""

from __future__ import annotations

import math
import random
import tomllib

import pytest

from experiments.config import ConfigError
from experiments.exp2_timeit import EXPERIMENT
from experiments.exp2_timeit.report import improvement_pct, repeat_totals, summarise
from experiments.exp2_timeit.run import load_timeit, parse_timeit, schedule

CONFIG = EXPERIMENT.config


def _data():
    with CONFIG.open("rb") as f:
        return tomllib.load(f)


def test_every_profile_loads():
    full = load_timeit(CONFIG, "full")
    assert full.ns == (1, 2, 5, 10, 20) and full.repeats == 30
    quick, smoke = load_timeit(CONFIG, "quick"), load_timeit(CONFIG, "smoke")
    assert quick.ns == (1, 2, 5, 10) and quick.repeats == 10
    assert smoke.ns == (1, 2, 3) and smoke.repeats == 3 and smoke.pause_s == 0
    assert smoke.paths == {"sync": "/api/v1/ml/sync/predict", "async": "/api/v1/ml/async/predict"}
    assert smoke.calls == 6 * 3 * 2
    assert full.to_dict()["ns"] == [1, 2, 5, 10, 20]


@pytest.mark.parametrize("change, message", [
    ({"ns": []}, "ns"),
    ({"ns": [0, 1]}, "ns"),
    ({"repeats": 1}, "repeats"),
    ({"bogus": 1}, "bogus"),
    ({"analysis": {"alpha": 0.9}}, "alpha"),
])
def test_bad_values_name_the_key(change, message):
    data = {**_data(), **change}
    with pytest.raises(ConfigError, match=message):
        parse_timeit(data, "full")


def test_unknown_profile():
    with pytest.raises(ConfigError, match="unknown profile"):
        load_timeit(CONFIG, "nope")


def test_schedule_interleaves_and_alternates_who_goes_first():
    plan = schedule(load_timeit(CONFIG, "smoke"))
    assert len(plan) == 3 * 3 * 2
    pairs = {}
    for r, n, arch, order in plan:
        pairs.setdefault((r, n), []).append((order, arch))
    assert all(sorted(a for _, a in v) == ["async", "sync"] for v in pairs.values())
    firsts = [dict(v)[0] for v in pairs.values()]
    assert firsts.count("sync") >= 4 and firsts.count("async") >= 4
    # Consecutive entries of a pair are back to back.
    assert all(plan[i][:2] == plan[i + 1][:2] for i in range(0, len(plan), 2))


def test_improvement_pct():
    assert improvement_pct(100.0, 71.0) == pytest.approx(29.0)
    assert improvement_pct(100.0, 120.0) == pytest.approx(-20.0)
    assert improvement_pct(0.0, 1.0) is None
    assert improvement_pct(math.nan, 1.0) is None


def _rows(sync_ms, async_ms, ns=(1, 2, 5), repeats=20, noise=0.02, seed=1):
    rng = random.Random(seed)
    rows = []
    for r in range(repeats):
        for n in ns:
            for arch, per in (("sync", sync_ms), ("async", async_ms)):
                t = n * per * (1 + rng.gauss(0, noise)) / 1000
                rows.append({"repeat": r, "n": n, "arch": arch, "order": 0,
                             "started_at_unix": 0.0, "seconds": t, "calls_ok": n,
                             "calls_failed": 0})
    return rows


def test_a_clear_difference_is_significant_and_conclusive():
    res = summarise(_rows(100.0, 55.0))
    for p in res["points"].values():
        assert p["improvement_pct"] == pytest.approx(45, abs=3)
        assert p["comparison"]["significant"] and p["conclusive"]
        assert p["sync"]["per_call_ms"] == pytest.approx(100, rel=0.03)
        assert p["sync"]["low"] < p["sync"]["mean"] < p["sync"]["high"]
    o = res["overall"]
    assert o["conclusive"] and o["improvement_pct"] == pytest.approx(45, abs=3)
    assert o["sum_of_means_ms"]["sync"] == pytest.approx(800, rel=0.03)


def test_no_difference_is_not_significant():
    res = summarise(_rows(100.0, 100.0, noise=0.03))
    assert not res["overall"]["comparison"]["significant"]
    assert "not significant" in res["overall"]["comparison"]["verdict"]
    assert not res["overall"]["conclusive"]


def test_a_large_spread_warns_that_it_cannot_conclude():
    res = summarise(_rows(100.0, 55.0, noise=0.3))
    assert res["overall"]["warnings"]
    assert not res["overall"]["conclusive"]
    assert any("unstable" in (p["sync"]["warning"] or "") for p in res["points"].values())


def test_failed_samples_are_left_out_and_counted():
    rows = _rows(100.0, 55.0, repeats=5)
    rows[0]["calls_failed"], rows[0]["seconds"] = 1, 99.0
    res = summarise(rows)
    assert res["overall"]["failed_samples"] == 1
    assert res["points"][1]["sync"]["n"] == 4
    # The incomplete repeat drops out of the per-repeat totals.
    assert len(repeat_totals([r for r in rows if r["calls_failed"] == 0], "sync")) == 4
