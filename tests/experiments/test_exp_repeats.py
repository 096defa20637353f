"""Repeat-level statistics on fixture numbers: the spread of the median (the range under 5
repeats, the order-statistic interval from 5, each with its label), CV and its flag, and the
repeat-level comparison (one case that is significant, one that is not)."""

from __future__ import annotations

import math
import statistics

import pytest

from experiments.analysis.stats import (
    CV_LIMIT,
    compare,
    interval_label,
    median_interval_ranks,
    repeat_summary,
)

# (values, interval, low, high, coverage, label) at n = 1, 2, 3, 5, 6
SPREADS = [
    ([20.9], "", math.nan, math.nan, None, "no interval (one value)"),
    ([21.8, 19.7], "range", 19.7, 21.8, None, "range of 2"),
    ([21.8, 19.7, 22.4], "range", 19.7, 22.4, None, "range of 3"),
    # n = 5: no interval of the median reaches 95 %; the min-max range covers it 1 - 2^-4
    ([20.1, 21.8, 19.7, 22.4, 20.9], "order_statistic", 19.7, 22.4, 0.9375,
     "93.75 % interval of the median (order statistics, n = 5)"),
    ([20.1, 21.8, 19.7, 22.4, 20.9, 23.0], "order_statistic", 19.7, 23.0, 0.96875,
     "96.88 % interval of the median (order statistics, n = 6)"),
]


@pytest.mark.parametrize(("values", "interval", "low", "high", "coverage", "label"), SPREADS)
def test_spread_method_and_label_follow_the_number_of_repeats(values, interval, low, high,
                                                              coverage, label):
    s = repeat_summary(values)
    assert s.n == len(values) and s.interval == interval
    assert s.median == pytest.approx(statistics.median(values))
    if math.isnan(low):
        assert math.isnan(s.low) and math.isnan(s.high)
    else:
        assert (s.low, s.high) == (low, high)
    assert s.confidence == (None if coverage is None else pytest.approx(coverage))
    text = interval_label(s.interval, s.confidence, s.n)
    assert text == label and "bootstrap" not in text
    assert repeat_summary(values) == s  # no resampling: the same repeats, the same spread


@pytest.mark.parametrize(("n", "k", "coverage"), [
    (5, 1, 1 - 2 ** -4), (6, 1, 1 - 2 ** -5), (8, 1, 1 - 2 ** -7),
    # n = 9: the 2nd smallest to the 2nd largest, 1 - 2 (1 + 9) / 2^9 = 96.1 %
    (9, 2, 1 - 2 * 10 / 512), (20, 6, None)])
def test_order_statistic_interval_is_the_narrowest_at_95_percent(n, k, coverage):
    got_k, got = median_interval_ranks(n)
    assert got_k == k
    if coverage is not None:
        assert got == pytest.approx(coverage)
    assert got >= 0.95 or n == 5
    # one rank inwards would fall below 95 %
    if k + 1 <= n // 2:
        inner = 1 - 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
        assert inner < 0.95


def test_order_statistic_interval_rejects_bad_input():
    with pytest.raises(ValueError, match="n = 1"):
        median_interval_ranks(1)
    with pytest.raises(ValueError, match="confidence = 1.5"):
        median_interval_ranks(6, 1.5)


def test_cv_of_five_repeats():
    s = repeat_summary([20.1, 21.8, 19.7, 22.4, 20.9])
    assert s.cv == pytest.approx(1.130 / 20.98, abs=1e-3) and not s.unstable


def test_cv_above_the_limit_is_flagged_unstable():
    s = repeat_summary([12.0, 22.0, 21.0])  # experiment 4's default/sync, two runs apart
    assert s.cv > CV_LIMIT and s.unstable


@pytest.mark.parametrize(
    ("values", "n", "cv"),
    [([], 0, math.nan), ([7.0], 1, math.nan), ([7.0, 7.0, 7.0], 3, 0.0),
     ([7.0, math.nan, 7.5], 2, None)],
)
def test_degenerate_repeats(values, n, cv):
    s = repeat_summary(values)
    assert s.n == n
    if cv is None:
        assert s.cv > 0
    elif math.isnan(cv):
        assert math.isnan(s.cv)
    else:
        assert s.cv == cv and s.low == s.high == s.median
    assert not s.unstable


def test_repeat_level_comparison_significant():
    sync = [20.8, 21.5, 20.2]
    async_ = [130.8, 128.1, 133.0]
    c = compare(sync, async_)
    assert c.significant and c.ratio == pytest.approx(6.2, rel=0.05)
    assert "significant" in c.verdict and "not" not in c.verdict


def test_repeat_level_comparison_not_significant():
    a = [20.8, 12.0, 22.0]  # the spread of one build across reruns
    b = [21.5, 19.0, 14.5]
    c = compare(a, b)
    assert not c.significant
    assert c.verdict.startswith("not significant")
