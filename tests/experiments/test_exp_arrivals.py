"""The open-model arrival schedules, checked statistically on generated schedules: the rate,
exponential inter-arrival times (Kolmogorov-Smirnov), Poisson counts per window (dispersion),
seeding, splitting over generator processes, and constant spacing."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from experiments.load.arrivals import ArrivalProcess, merged_times

# Fixed seeds make every check deterministic: a threshold either holds for these schedules or
# the generator is wrong. ALPHA is strict so a correct generator passes with a wide margin.
ALPHA = 0.001


@pytest.mark.parametrize(("rate", "seed"), [(50.0, 1), (400.0, 2), (2.5, 3)])
def test_poisson_rate_and_exponential_gaps(rate, seed):
    duration = 4000 / rate  # about 4,000 arrivals
    times = ArrivalProcess(rate, seed=seed).times(duration)
    n = len(times)
    # count ~ Poisson(rate * duration): within 4 standard deviations
    assert abs(n - rate * duration) < 4 * np.sqrt(rate * duration)
    gaps = np.diff(times)
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > ALPHA
    # not merely exponential-looking: a constant schedule of the same rate is rejected
    const = ArrivalProcess(rate, "constant").times(duration)
    assert stats.kstest(np.diff(const), "expon", args=(0, 1 / rate)).pvalue < ALPHA


def test_poisson_counts_per_window_have_dispersion_one():
    rate, window, windows = 100.0, 1.0, 400
    times = ArrivalProcess(rate, seed=7).times(window * windows)
    counts = np.histogram(times, bins=windows, range=(0, window * windows))[0]
    # index of dispersion: var/mean = 1 for Poisson (a bursty or paced schedule is far off)
    dispersion = counts.var(ddof=1) / counts.mean()
    assert 0.8 < dispersion < 1.2
    # chi-square of the dispersion statistic with windows-1 degrees of freedom
    chi2 = (windows - 1) * dispersion
    assert ALPHA < stats.chi2.sf(chi2, windows - 1) < 1 - ALPHA


def test_seeded_schedules_repeat_and_differ_by_seed():
    a = ArrivalProcess(80.0, seed=11).times(10.0)
    assert np.array_equal(a, ArrivalProcess(80.0, seed=11).times(10.0))
    assert not np.array_equal(a, ArrivalProcess(80.0, seed=12).times(10.0))
    assert np.all(np.diff(a) > 0) and a[0] >= 0 and a[-1] < 10.0


def test_split_streams_are_independent_and_sum_to_the_rate():
    process = ArrivalProcess(300.0, seed=5)
    streams = process.split(3)
    assert [s.stream_rate for s in streams] == [100.0] * 3
    per_stream = [s.times(20.0) for s in streams]
    assert not np.array_equal(per_stream[0], per_stream[1])
    merged = merged_times(streams, 20.0)
    assert abs(len(merged) - 6000) < 4 * np.sqrt(6000)
    assert stats.kstest(np.diff(merged), "expon", args=(0, 1 / 300.0)).pvalue > ALPHA


def test_constant_streams_interleave_evenly():
    streams = ArrivalProcess(40.0, "constant").split(4)
    merged = merged_times(streams, 2.0)
    assert len(merged) == 80
    assert np.allclose(np.diff(merged), 1 / 40.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rate": 0}, "arrival rate = 0"), ({"rate": 10, "process": "bursty"}, "'bursty'"),
     ({"rate": 10, "index": 2, "streams": 2}, "stream index 2")],
)
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ArrivalProcess(**kwargs)
