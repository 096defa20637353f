"""Statistics: CI, significance, stability, honest comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from experiments.analysis.stats import (
    compare,
    mann_whitney,
    mean_ci,
    percentiles,
    stability_warning,
    welch_t,
)


def test_percentiles_are_exact():
    values = np.arange(1, 101, dtype=float)
    p = percentiles(values)
    assert p == {"p50": 50.5, "p95": pytest.approx(95.05), "p99": pytest.approx(99.01)}
    assert math.isnan(percentiles([])["p50"])


def test_mean_ci_matches_the_t_distribution():
    values = [10.0, 12.0, 11.0, 13.0, 9.0]
    ci = mean_ci(values)
    half = sps.t.ppf(0.975, 4) * np.std(values, ddof=1) / math.sqrt(5)
    assert ci.mean == 11.0
    assert ci.low == pytest.approx(11 - half) and ci.high == pytest.approx(11 + half)
    assert ci.n == 5 and ci.warning is not None  # std 1.58 is 14 % of the mean
    assert mean_ci([5.0]).warning and mean_ci([]).n == 0


def test_stability_warning_at_ten_percent():
    assert stability_warning([100, 101, 99, 100]) is None
    w = stability_warning([100, 130, 70, 100])
    assert w and "unstable" in w


def test_clearly_different_samples_are_significant():
    rng = np.random.default_rng(1)
    a = rng.normal(100, 5, 200)
    b = rng.normal(60, 5, 200)
    c = compare(a, b, test="welch", label_a="sync", label_b="async")
    assert c.significant and c.p_value < 1e-10
    assert c.ratio == pytest.approx(0.6, rel=0.03)
    assert "async/sync = 0.6" in c.verdict
    m = compare(a, b, test="mannwhitney")
    assert m.significant and m.center == "median"


def test_identical_samples_are_not_significant():
    rng = np.random.default_rng(2)
    a = rng.normal(100, 5, 100)
    c = compare(a, a.copy(), test="welch")
    assert not c.significant and c.verdict.startswith("not significant")
    same = compare([5.0] * 10, [5.0] * 10, test="mannwhitney")
    assert not same.significant and same.p_value == 1.0
    assert welch_t([1.0] * 5, [1.0] * 5).p_value == 1.0


def test_draws_from_one_distribution_are_usually_not_significant():
    rng = np.random.default_rng(3)
    hits = sum(
        compare(rng.normal(50, 10, 40), rng.normal(50, 10, 40)).significant for _ in range(100)
    )
    assert hits <= 12  # about alpha = 5 % false positives


def test_tiny_significant_difference_is_called_no_meaningful_difference():
    rng = np.random.default_rng(4)
    a = rng.normal(100, 1, 5000)
    b = a + 0.5
    c = compare(a, b, min_effect=0.02)
    assert c.significant and "no meaningful difference" in c.verdict


def test_not_enough_data():
    assert compare([1.0], [2.0]).verdict == "not enough data to compare"
    assert math.isnan(mann_whitney([], [1.0]).p_value)
