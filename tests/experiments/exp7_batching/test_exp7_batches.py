"""Experiment 7's analysis on synthetic data: the batches a run formed from the model's
per-worker counters, the device's busy share, the one-line histogram, and the regime verdict."""

from __future__ import annotations

import pytest

from experiments.exp7_batching.batches import (
    histogram,
    pooled,
    regime,
    size_line,
    size_percentile,
    utilisation,
)


def _worker(pid, sizes=None, holds=0, busy=0.0, slots=1):
    body = {"pid": pid, "device_slots": slots, "device_holds": holds, "device_busy_s": busy,
            "batching": "micro" if sizes is not None else "off",
            "model": {"sleep_ms": [40, 50], "device_per_item_ms": 0.5}}
    if sizes is not None:
        body["batch_sizes"] = {str(k): v for k, v in sizes.items()}
    return body


def _record(before, after, expected=2):
    return {"workers_expected": expected,
            "before": {"workers": {str(w["pid"]): w for w in before}},
            "after": {"workers": {str(w["pid"]): w for w in after}}}


def test_micro_batches_are_the_difference_summed_over_workers():
    h = histogram(_record(
        [_worker(1, {1: 5, 2: 1}, busy=1.0), _worker(2, {2: 3}, busy=0.5)],
        [_worker(1, {1: 6, 2: 4, 8: 2}, busy=2.0), _worker(2, {2: 3, 3: 10}, busy=1.5)]))
    assert h["sizes"] == {1: 1, 2: 3, 3: 10, 8: 2}
    assert h["batches"] == 16 and h["items"] == 1 + 6 + 30 + 16
    assert h["mean_size"] == pytest.approx(53 / 16)
    # the batch an average request travelled in weighs each size by its items
    assert h["item_mean_size"] == pytest.approx((1 + 12 + 90 + 128) / 53)
    assert h["max_size"] == 8 and h["device_busy_s"] == pytest.approx(2.0)
    assert h["complete"] and h["workers_counted"] == 2
    assert h["model"]["sleep_ms"] == [40, 50] and h["slots"] == 1


def test_on_demand_counts_every_hold_as_a_batch_of_one():
    h = histogram(_record([_worker(7, holds=10)], [_worker(7, holds=25)], expected=1))
    assert h["sizes"] == {1: 15} and h["mean_size"] == 1 and h["complete"]


def test_a_worker_missed_or_restarted_is_left_out_and_flagged():
    missed = histogram(_record([_worker(1, {1: 1})],
                               [_worker(1, {1: 3}), _worker(2, {4: 100})]))
    assert missed["sizes"] == {1: 2} and missed["workers_counted"] == 1
    assert not missed["complete"]
    restarted = histogram(_record([_worker(1, {1: 50}), _worker(2, {1: 1})],
                                  [_worker(1, {1: 2}), _worker(2, {1: 4})]))
    assert restarted["sizes"] == {1: 3} and not restarted["complete"]
    unknown = histogram({**_record([_worker(1, {1: 1})], [_worker(1, {1: 2})]),
                         "workers_expected": None})
    assert not unknown["complete"]  # nothing says every worker was seen
    empty = histogram({"before": {}, "after": {}})
    assert empty["batches"] == 0 and empty["mean_size"] is None and empty["max_size"] is None


def test_utilisation_per_slot_or_in_flight():
    h = histogram(_record([_worker(1, {1: 0}, busy=0.0)], [_worker(1, {2: 10}, busy=4.0)], 1))
    assert utilisation(h, 5.0) == pytest.approx(0.8)
    unbounded = {**h, "slots": 0}
    assert utilisation(unbounded, 2.0) == pytest.approx(2.0)  # two predictions in flight
    assert utilisation(h, None) is None and utilisation(h, 0) is None


def test_histogram_lines_and_percentiles():
    assert size_line({}) == "-"
    assert size_line({1: 5, 2: 7}) == "1x5 2x7"
    many = {k: k for k in range(1, 10)}
    assert size_line(many, top=3) == "7x7 8x8 9x9 (+6 sizes)"
    assert pooled([{"sizes": {1: 2}}, {"sizes": {1: 1, 4: 1}}]) == {1: 3, 4: 1}
    # item-weighted: 2 requests alone, 8 in one batch of 8
    assert size_percentile({1: 2, 8: 1}, 50) == 8
    assert size_percentile({1: 2, 8: 1}, 10) == 1
    assert size_percentile({}, 50) is None


def _side(cap, failed, p50):
    """A search's capacity, the lowest rate it confidently failed (None: none) and its p50."""
    return {"capacity_rps": cap, "failed_rps": failed, "p50_1_user_ms": p50}


def test_batching_wins_when_it_passed_a_rate_on_demand_failed():
    v = regime(_side(200, 220, 55), _side(10, 11, 92))
    assert v["regime"] == "wins" and v["ratio"] == pytest.approx(20)
    assert v["added_p50_ms"] == pytest.approx(-37)  # one slot: the two calls no longer queue
    # a lower bound counts for batching when on-demand failed below it
    assert regime(_side(40, None, 50), _side(10, 11, 90))["regime"] == "wins"


def test_batching_only_adds_latency_when_capacities_are_not_told_apart():
    v = regime(_side(100, 110, 52), _side(105, 115, 47))
    assert v["regime"] == "adds latency only" and v["added_p50_ms"] == pytest.approx(5)
    # higher by more than the margin, but still below where on-demand failed: not told apart
    assert regime(_side(120, 130, 52), _side(100, 125, 47))["regime"] == "adds latency only"
    # on-demand never failed (every rate passed): batching cannot be shown to beat it
    assert regime(_side(300, 330, 52), _side(100, None, 47))["regime"] == \
        "adds latency only"


def test_batching_loses_no_difference_and_undecided():
    assert regime(_side(50, 55, 60), _side(100, 110, 47))["regime"] == "loses"
    assert regime(_side(100, 110, 45), _side(100, 110, 47))["regime"] == "lowers latency only"
    assert regime(_side(100, 110, 47), _side(100, 110, 47))["regime"] == "no difference"
    no_p50 = regime(_side(100, 110, None), _side(100, 110, 47))
    assert no_p50["regime"] == "no difference" and "no 1-user p50" in no_p50["why"]
    v = regime(_side(None, None, 50), _side(100, 110, 47))
    assert v["regime"] == "undecided" and "batching" in v["why"]
    # passed nothing, but confidently failed 2/s, which on-demand passed by far: it loses
    assert regime(_side(None, 2, 50), _side(100, 110, 47))["ratio_at_least"] == 50
    assert regime(_side(100, 110, None), _side(100, 110, 47))["added_p50_ms"] is None
    assert regime(_side(100, 110, 50), _side(100, 110, 47), margin=0.0)["ratio"] == 1


def test_a_side_that_passed_nothing_decides_through_the_rate_it_confidently_failed():
    # experiment 7's quick run: on-demand on one slot failed its lowest rate, 5.0 req/s
    on_demand = _side(None, 5.0, 97.8)
    micro = _side(82.4, 89.9, 57.9)
    v = regime(micro, on_demand)
    assert v["regime"] == "wins" and v["ratio_at_least"] == pytest.approx(82.4 / 5.0)
    assert v["ratio"] is None
    # within the margin of that rate, or without a confident failure: undecided
    assert regime({**micro, "capacity_rps": 5.2}, on_demand)["regime"] == "undecided"
    assert regime(micro, {**on_demand, "failed_rps": None})["regime"] == "undecided"
    # and the other way round
    assert regime(on_demand, micro)["regime"] == "loses"


def test_a_rate_that_failed_only_undecided_bounds_nothing():
    # one notion of where a capacity ends for the verdict and the table: the lowest rate the
    # search confidently failed. A first failing step that stayed undecided is not one, so a
    # batching capacity above it by the margin does not "win" against it.
    assert regime(_side(120, 130, 52), _side(100, None, 47))["regime"] == "adds latency only"
    assert regime(_side(120, 130, 52), _side(100, 110, 47))["regime"] == "wins"
