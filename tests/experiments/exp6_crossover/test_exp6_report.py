"""Experiment 6's report from numbers: where an advantage crosses the threshold, each factor's
series with its shared baseline, the rule of thumb."""

from __future__ import annotations

import pytest

from experiments.exp6_crossover.report import (
    _factor_lines,
    advantage,
    crossing,
    crossing_sentence,
    factor_series,
)


def test_an_advantage_and_where_it_crosses():
    assert advantage(110.0, 100.0) == pytest.approx(0.10)
    assert advantage(None, 100.0) is None and advantage(100.0, 0.0) is None
    c = crossing([(0, 1.5), (5, 0.3), (20, 0.05)], 0.10)
    assert c["kind"] == "crosses" and c["between"] == [5, 20]
    assert c["value"] == pytest.approx(5 + (0.3 - 0.1) / (0.3 - 0.05) * 15)
    assert crossing([(0, 0.05), (5, 0.5)], 0.10)["kind"] == "below"
    assert crossing([(0, 2.0), (5, 0.5)], 0.10) == {"kind": "above", "value": 5,
                                                    "advantage": 0.5}
    # unknown points are skipped, not read as a crossing
    assert crossing([(0, 1.0), (5, None), (20, 0.0)], 0.1)["between"] == [0, 20]
    assert crossing([(0, None)], 0.1) == {"kind": "unknown"}
    f = {"unit": "ms"}
    assert "about **17 ms** (between 5 ms, +30%, and 20 ms, +5%)" in crossing_sentence(
        crossing([(5, 0.3), (20, 0.05)], 0.1), f, 0.1)


def _row(cap, predicted, status="found"):
    return {"capacity_rps": cap, "capacity_status": status, "predicted_rps": predicted}


PLAN = {"threshold": 0.10, "tiers": ["best"],
        "factors": {"model_cpu_ms": {"values": [0, 5, 20], "default": 0.0, "unit": "ms",
                                     "what": "CPU per prediction in the model API"}},
        "points": {"baseline-best": {"factor": "", "value": None, "tier": "best"},
                   "model_cpu_ms-5-best": {"factor": "model_cpu_ms", "value": 5.0,
                                           "tier": "best"},
                   "model_cpu_ms-20-best": {"factor": "model_cpu_ms", "value": 20.0,
                                            "tier": "best"}}}


def test_each_factor_runs_from_the_shared_baseline_and_finds_the_crossing():
    rows = {("baseline-best", "sync"): _row(190.0, 250.0),
            ("baseline-best", "async"): _row(500.0, 600.0),
            ("model_cpu_ms-5-best", "sync"): _row(80.0, 90.0),
            ("model_cpu_ms-5-best", "async"): _row(96.0, 95.0),
            # an invalid search gives no capacity: the advantage there is unknown
            ("model_cpu_ms-20-best", "sync"): _row(24.0, 23.0, status="invalid"),
            ("model_cpu_ms-20-best", "async"): _row(25.0, 24.0)}
    series = factor_series(rows, PLAN)["model_cpu_ms"]["best"]
    assert [p["value"] for p in series["series"]] == [0.0, 5.0, 20.0]
    assert series["series"][0]["variant"] == "baseline-best"
    assert series["series"][1]["advantage"] == pytest.approx(0.2)
    assert series["series"][2]["advantage"] is None
    assert series["series"][2]["sync_status"] == "invalid"
    assert series["crossing"]["kind"] == "above"  # 20 ms unknown: the crossing is not claimed
    # predicted: +140 %, +5.6 %, +4.3 %: crosses between 0 and 5 ms
    assert series["predicted_crossing"]["kind"] == "crosses"
    assert series["predicted_crossing"]["between"] == [0.0, 5.0]
    res = {"plan": PLAN, "factors": {"model_cpu_ms": {"best": series}}}
    text = "\n".join(_factor_lines(res))
    assert "| 20 | best | n/a (invalid) | 25.0 |" in text
    assert "stays above 10% up to 5 ms (+20% there)" in text
    assert "## Rule of thumb" in text


def test_a_capacity_above_the_range_is_shown_as_a_bound_and_never_compared():
    rows = {("baseline-best", "sync"): _row(4.0, 20.0, status="above_range"),
            ("baseline-best", "async"): _row(4.0, 140.0, status="above_range")}
    plan = {**PLAN, "points": {"baseline-best": PLAN["points"]["baseline-best"]}}
    series = factor_series(rows, plan)["model_cpu_ms"]["best"]
    (p,) = series["series"]
    assert p["advantage"] is None and series["crossing"] == {"kind": "unknown"}
    assert p["predicted_advantage"] == pytest.approx(6.0)
    text = "\n".join(_factor_lines({"plan": plan, "factors": {"model_cpu_ms": {"best": series}}}))
    assert "| 0 | best | ≥ 4.0 (every rate passed) | ≥ 4.0 (every rate passed) | n/a |" in text
