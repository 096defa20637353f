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
    assert advantage(None, 100.0) is None and advantage(0.0, 0.0) is None
    assert advantage(100.0, 0.0) == float("inf")  # only async meets the bound
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


def _row(cap, predicted, status="found", overloaded=None, one_user=60.0):
    return {"capacity_rps": cap, "capacity_status": status, "predicted_rps": predicted,
            "first_overloaded_rps": overloaded, "p50_1_user_ms": one_user,
            "capacity_p99_bound_ms": 250.0}


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
    assert p["advantage"] is None and series["crossing"]["kind"] == "unknown"
    assert p["predicted_advantage"] == pytest.approx(6.0)
    text = "\n".join(_factor_lines({"plan": plan, "factors": {"model_cpu_ms": {"best": series}}}))
    assert "| 0 | best | ≥ 4.0 (every rate passed) | ≥ 4.0 (every rate passed) | n/a |" in text


def test_a_bound_out_of_reach_at_one_user_is_a_capacity_of_0():
    # sync calling a 200 ms model twice in sequence: 400 ms with one user, over the 250 ms
    # bound at any rate; its search never saw the stack idle under the bound (invalid)
    rows = {("baseline-best", "sync"): _row(190.0, 250.0, overloaded=205.0),
            ("baseline-best", "async"): _row(500.0, 600.0, overloaded=540.0),
            ("model_cpu_ms-5-best", "sync"): _row(None, 158.0, status="invalid",
                                                  one_user=398.8),
            ("model_cpu_ms-5-best", "async"): _row(272.4, 433.8, overloaded=297.0)}
    plan = {**PLAN, "points": {k: v for k, v in PLAN["points"].items() if "20" not in k}}
    series = factor_series(rows, plan)["model_cpu_ms"]["best"]
    p = series["series"][1]
    assert p["sync_rps"] == 0.0 and p["sync_status"] == "out_of_reach"
    assert p["advantage"] == float("inf")
    assert series["crossing"]["kind"] == "above" and series["crossing"]["settled"] is True
    text = "\n".join(_factor_lines({"plan": plan, "factors": {"model_cpu_ms": {"best": series}}}))
    assert "| 5 | best | 0 (1 user: p50 399 ms, over the bound;" in text
    assert "| 272.4 | async only |" in text
    # the same when its search failed every step (below range, or no rate passed before the
    # step budget ran out)
    for status in ("below_range", "unfinished"):
        rows[("model_cpu_ms-5-best", "sync")] = _row(None, 158.0, status=status,
                                                      one_user=398.8)
        assert factor_series(rows, plan)["model_cpu_ms"]["best"]["series"][1][
            "sync_status"] == "out_of_reach"
    # a search that is invalid for another reason stays unknown
    rows[("model_cpu_ms-5-best", "sync")] = _row(None, 158.0, status="invalid", one_user=80.0)
    assert factor_series(rows, plan)["model_cpu_ms"]["best"]["series"][1]["advantage"] is None


def test_a_crossing_the_brackets_do_not_settle_is_marked():
    # async held 39.5 but first failed at 55.9: its advantage over sync's 44.1 (found,
    # 48.1 overloaded) lies between -18% and +27%, both sides of 10%
    rows = {("baseline-best", "sync"): _row(211.4, 269.5, status="unfinished", overloaded=299.0),
            ("baseline-best", "async"): _row(654.3, 478.9, overloaded=713.5),
            ("model_cpu_ms-5-best", "sync"): _row(44.1, 70.7, overloaded=48.1),
            ("model_cpu_ms-5-best", "async"): _row(39.5, 86.3, status="unfinished",
                                                   overloaded=55.9)}
    plan = {**PLAN, "points": {k: v for k, v in PLAN["points"].items() if "20" not in k}}
    series = factor_series(rows, plan)["model_cpu_ms"]["best"]
    lo, hi = series["series"][1]["advantage_range"]
    assert lo == pytest.approx(39.5 / 48.1 - 1) and hi == pytest.approx(55.9 / 44.1 - 1)
    base_lo, _ = series["series"][0]["advantage_range"]
    assert base_lo == pytest.approx(654.3 / 299.0 - 1)
    # a held floor gives the range, never a point advantage: no crossing rests on one (the
    # committed crossing run's "+67 % at 4 ms" rested on such a floor)
    assert series["series"][1]["advantage"] is None and series["series"][0]["advantage"] is None
    assert series["crossing"]["kind"] == "unknown"
    text = "\n".join(_factor_lines({"plan": plan, "factors": {"model_cpu_ms": {"best": series}}}))
    assert "| 5 | best | 44.1 | >= 39.5 (held) | n/a (-18% to +27%) |" in text
    # with both searches closed, a crossing whose ranges reach both sides is not settled
    rows[("baseline-best", "sync")] = _row(211.4, 269.5, overloaded=222.0)
    rows[("model_cpu_ms-5-best", "async")] = _row(39.5, 86.3, overloaded=55.9)
    series = factor_series(rows, plan)["model_cpu_ms"]["best"]
    c = series["crossing"]
    assert c["kind"] == "crosses" and c["settled"] is False
    text = "\n".join(_factor_lines({"plan": plan, "factors": {"model_cpu_ms": {"best": series}}}))
    assert "| 5 | best | 44.1 | 39.5 | -10% (-18% to +27%) |" in text
    assert "**not settled**" in text
    # the advantage comes back above the threshold further on: said, not hidden
    again = crossing([(0, 2.0), (5, -0.1), (20, 0.94)], 0.10)
    assert again["above_again"] == {"value": 20, "advantage": 0.94}
    assert "; above it again at 20 ms (+94%)" in crossing_sentence(again, {"unit": "ms"}, 0.1)
    # with the async bracket closed below the threshold, the same crossing is settled
    rows[("model_cpu_ms-5-best", "async")] = _row(39.5, 86.3, overloaded=41.0)
    assert factor_series(rows, plan)["model_cpu_ms"]["best"]["crossing"]["settled"] is True

