"""Breaking-point detection on synthetic per-second histories."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.analysis.breaking_point import (
    detect_breaking_point,
    rule_sentence,
    users_to_hold,
)
from experiments.analysis.history import PerSecond
from experiments.exp3_load import EXPERIMENT as EXP3
from experiments.protocol import BreakingPointParams

PARAMS = EXP3.configure("full").analysis.breaking_point


def series(users, achieved, p95, failures=None):
    users = np.asarray(users, dtype=int)
    achieved = np.asarray(achieved, dtype=float)
    failures = np.zeros(len(users), dtype=int) if failures is None else np.asarray(failures)
    requests = np.round(achieved).astype(int) + failures
    p95 = np.asarray(p95, dtype=float)
    return PerSecond(
        t0=1_000_000.0,
        t=np.arange(len(users), dtype=float),
        users=users,
        offered_rps=users.astype(float),
        requests=requests,
        failures=failures,
        p50_ms=p95 / 2,
        p95_ms=p95,
    )


RAMP = np.arange(1, 301)  # the full load test: +1 user per second, 1 request/s each


def test_clear_knee_is_found_near_capacity():
    achieved = np.minimum(RAMP, 120)
    p95 = 50 + np.maximum(0, RAMP - 120) * 20.0  # queueing once capacity is exceeded
    bp = detect_breaking_point(series(RAMP, achieved, p95), PARAMS)
    assert bp.found
    assert 120 <= bp.users <= 140
    assert bp.criterion in ("latency", "throughput")
    assert set(bp.fired) == {"latency", "throughput"}
    assert bp.max_achieved_rps == pytest.approx(120)
    assert bp.baseline_p95_ms == pytest.approx(50)
    assert bp.last_good_users == bp.users - 1
    assert bp.at_unix == pytest.approx(1_000_000.0 + bp.t_s)
    assert users_to_hold(bp, EXP3.configure("full").scenario("load_test")) == bp.users


def test_throughput_only_knee():
    achieved = np.minimum(RAMP, 150)
    bp = detect_breaking_point(series(RAMP, achieved, np.full(300, 40.0)), PARAMS)
    assert bp.found and bp.criterion == "throughput"
    # achieved < 90 % of offered from 167 users (150 / 0.9 = 166.7)
    assert 165 <= bp.users <= 170
    assert "latency" not in bp.fired


def test_no_knee_within_the_tested_range():
    bp = detect_breaking_point(series(RAMP, RAMP, np.full(300, 40.0)), PARAMS)
    assert not bp.found and bp.users is None
    assert "no knee within the tested range" in bp.message
    assert bp.max_users == 300
    lt = EXP3.configure("full").scenario("load_test")
    assert users_to_hold(bp, lt) == 300


def test_noise_without_a_knee_does_not_fire():
    rng = np.random.default_rng(7)
    achieved = rng.poisson(RAMP).astype(float)  # Poisson counts: noisier than paced users
    p95 = 40 + rng.normal(0, 4, 300)
    p95[[50, 120, 121, 200, 260]] = 400  # isolated latency spikes (GC, a slow call)
    achieved[[80, 81, 180]] *= 0.5  # isolated throughput dips
    bp = detect_breaking_point(series(RAMP, achieved, p95), PARAMS)
    assert not bp.found, bp.message


def test_noisy_knee_is_found_near_the_true_one():
    rng = np.random.default_rng(11)
    achieved = rng.poisson(np.minimum(RAMP, 100)).astype(float)
    p95 = 60 + np.maximum(0, RAMP - 100) * 15.0 + rng.normal(0, 5, 300)
    bp = detect_breaking_point(series(RAMP, achieved, p95), PARAMS)
    assert bp.found and 100 <= bp.users <= 125


def test_errors_appearing_are_a_breaking_point():
    failures = np.where(RAMP >= 200, np.ceil(RAMP * 0.05), 0).astype(int)
    achieved = RAMP - failures
    bp = detect_breaking_point(series(RAMP, achieved, np.full(300, 40.0), failures), PARAMS)
    assert bp.found and bp.criterion == "errors"
    assert 198 <= bp.users <= 202


def test_a_few_failures_below_the_rate_do_not_fire():
    failures = np.zeros(300, dtype=int)
    failures[[30, 150, 151]] = 1
    bp = detect_breaking_point(series(RAMP, RAMP - failures, np.full(300, 40.0), failures), PARAMS)
    assert not bp.found


def test_low_load_jitter_is_not_a_throughput_knee():
    # with a handful of users, achieved counts jitter by whole requests: never a knee
    users = np.repeat(np.arange(1, 6), 20)
    achieved = users + np.tile([-1, 1, 0, -1, 1], 20)
    bp = detect_breaking_point(series(users, achieved, np.full(100, 30.0)), PARAMS)
    assert not bp.found


def test_empty_series():
    bp = detect_breaking_point(series([], [], []), PARAMS)
    assert not bp.found and "no data" in bp.message


def test_rule_sentence_states_the_factors():
    p = BreakingPointParams(throughput_ratio=0.85, latency_factor=2.5, sustain_s=4, error_rate=0.02)
    text = rule_sentence(p)
    for part in ("85%", "2.5x", "4 consecutive", "2.0%", "no knee"):
        assert part in text
