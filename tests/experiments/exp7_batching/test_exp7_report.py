"""Experiment 7's report on synthetic rows: each batching row paired with the on-demand row of
its scoring handler and device, the step at capacity, lower bounds written as such."""

from __future__ import annotations

from experiments.exp7_batching.report import _at_capacity, _capacity, regimes


def _row(model, device, slots, cap, failed, p50, arch="async", status="found", batch=None):
    """A row as analyse() makes it; `failed`: the lowest rate its search confidently failed."""
    at = {"histogram": {"item_mean_size": batch}} if batch else None
    return {"model_build": model, "device": device, "slots": slots, "arch": arch,
            "architecture": f"{arch} scoring + {model}", "capacity_rps": cap,
            "capacity_status": status, "capacity_upper_rps": failed, "p50_1_user_ms": p50,
            "max_wait_ms": 5.0 if model == "micro" else None, "at_capacity": at}


def test_each_batching_row_meets_its_twin_on_the_same_device():
    rows = [_row("on-demand", "1-slot", 1, 10, 11, 92), _row("micro", "1-slot", 1, 180, 200, 55,
                                                             batch=7.5),
            _row("on-demand", "no-limit", 0, 300, 330, 47),
            _row("micro", "no-limit", 0, 290, 320, 53),
            _row("on-demand", "1-slot", 1, 5, 6, 95, arch="sync")]
    out = {g["device"]: g for g in regimes(rows, 0.10)}
    assert len(regimes(rows, 0.10)) == 2  # sync has no batching twin: no verdict
    one, free = out["1-slot"], out["no-limit"]
    assert one["regime"] == "wins" and one["against"] == "async scoring + on-demand"
    assert one["added_p50_ms"] == -37 and one["mean_batch_at_capacity"] == 7.5
    assert free["regime"] == "adds latency only" and free["added_p50_ms"] == 6
    assert free["max_wait_ms"] == 5.0 and free["slots"] == 0
    # a batching row without an on-demand twin is left out, not compared with another device
    assert regimes([_row("micro", "1-slot", 1, 100, 110, 50),
                    _row("on-demand", "no-limit", 0, 50, 55, 47)], 0.1) == []


def test_capacity_cells_and_the_step_at_capacity():
    assert _capacity({"capacity_rps": 12.34, "capacity_status": "found"}) == "12.3"
    assert _capacity({"capacity_rps": 40, "capacity_status": "unfinished"}) == \
        ">= 40.0 (lower bound)"
    assert _capacity({"capacity_rps": None, "capacity_status": "below_range"}) == \
        "n/a (below_range)"
    assert _capacity({}) == "no search"
    levels = [{"rate": None, "outcome": None}, {"rate": 10.0, "outcome": "pass", "n": 1},
              {"rate": 20.0, "outcome": "fail"}, {"rate": 10.0, "outcome": "pass", "n": 2}]
    assert _at_capacity(levels, 10.0)["n"] == 2  # the last: a hold after the step
    assert _at_capacity(levels, 15.0) is None and _at_capacity(levels, None) is None
