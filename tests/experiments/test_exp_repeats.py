"""Repeat-level statistics on fixture numbers: bootstrap CI of the median, CV and its flag, and
the repeat-level comparison (one case that is significant, one that is not)."""

from __future__ import annotations

import math

import pytest

from experiments.analysis.stats import CV_LIMIT, compare, repeat_summary


def test_bootstrap_interval_brackets_the_median_and_is_seeded():
    values = [20.1, 21.8, 19.7, 22.4, 20.9]
    s = repeat_summary(values)
    assert s.n == 5 and s.median == pytest.approx(20.9)
    assert min(values) <= s.low <= s.median <= s.high <= max(values)
    assert repeat_summary(values) == s  # same repeats, same interval
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
