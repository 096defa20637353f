"""Find the breaking point of a load test from its per-second series.

The original read it off a chart by eye. Here it is the first load at which, after
smoothing and for a sustained stretch, any criterion fires:

- throughput: achieved requests/s stop following the offered load
  (achieved < throughput_ratio x offered, short of it by >= min_deficit_rps and by more
  than noise_sigmas x sqrt(offered / smoothing_s), the Poisson noise of a smoothed count);
- latency: p95 leaves its low-load baseline (> latency_factor x baseline and
  >= latency_min_increase_ms above it);
- errors: more than error_rate of the requests fail.

Smoothing is a centred moving window of `smoothing_s` seconds (median of the achieved
requests/s, of p95 and of the error rate, so that isolated spikes and dips do not count;
mean of the offered load); a condition counts only when it holds for `sustain_s`
consecutive seconds, and the breaking point is the first second of that stretch. Without
any, the result says "no knee within the tested range". `rule_sentence(params)` states the
rule with its factors for the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiments.analysis.history import PerSecond, load_run_dir
from experiments.protocol import BreakingPointParams, Scenario

CRITERIA = ("throughput", "latency", "errors")


@dataclass(frozen=True)
class BreakingPoint:
    found: bool
    users: int | None  # users at the onset (the load to hold in max_performance)
    offered_rps: float | None
    achieved_rps: float | None  # smoothed, at the onset
    p95_ms: float | None  # smoothed, at the onset
    t_s: float | None  # seconds since the series' t0
    at_unix: float | None
    criterion: str | None  # the criterion that fired first
    fired: dict[str, float] = field(default_factory=dict)  # criterion -> onset t_s
    last_good_users: int | None = None  # users in the last second before the onset
    baseline_p95_ms: float | None = None
    max_achieved_rps: float = 0.0  # best smoothed throughput over the whole test
    max_users: int = 0
    message: str = ""
    rule: str = ""

    @classmethod
    def not_found(cls, message: str, rule: str, **known: Any) -> BreakingPoint:
        """No knee: every field of the onset None, what the test did show (``known``:
        baseline_p95_ms, max_achieved_rps, max_users) kept."""
        return cls(False, None, None, None, None, None, None, None, message=message, rule=rule,
                   **known)

    def to_dict(self) -> dict:
        return asdict(self)


def rule_sentence(p: BreakingPointParams) -> str:
    """The detection rule as a sentence, with the actual factors."""
    return (
        f"The breaking point is the first load at which, for at least {p.sustain_s} consecutive "
        f"seconds (after a centred {p.smoothing_s} s moving median), "
        f"achieved throughput falls below {p.throughput_ratio:.0%} of the offered load "
        f"(users / pacing, lagged {p.lag_s:g} s) and short of it by at least "
        f"{p.min_deficit_rps:g} req/s and by more than {p.noise_sigmas:g} standard deviations "
        f"of the smoothed count (Poisson: sqrt(offered / {p.smoothing_s} s)), or p95 latency "
        f"exceeds {p.latency_factor:g}x its low-load "
        f"baseline (median p95 of seconds {p.baseline_skip_s}-{p.baseline_skip_s + p.baseline_s}) "
        f"and by at least {p.latency_min_increase_ms:g} ms, or more than {p.error_rate:.1%} of "
        f"requests fail (moving median of the per-second error rate). If none holds, there is "
        f"no knee within the tested range."
    )


def _centred(values: np.ndarray, window: int, how: str) -> np.ndarray:
    n = len(values)
    out = np.full(n, np.nan)
    half_lo, half_hi = (window - 1) // 2, window // 2
    for i in range(n):
        chunk = values[max(0, i - half_lo) : i + half_hi + 1]
        chunk = chunk[~np.isnan(chunk)]
        if len(chunk):
            out[i] = (
                np.median(chunk)
                if how == "median"
                else (chunk.sum() if how == "sum" else chunk.mean())
            )
    return out


def _first_sustained(cond: np.ndarray, sustain: int) -> int | None:
    run = 0
    for i, c in enumerate(cond):
        run = run + 1 if c else 0
        if run >= sustain:
            return i - sustain + 1
    return None


def baseline_p95(series: PerSecond, p: BreakingPointParams) -> float | None:
    """Median per-second p95 over the baseline window (seconds with requests only)."""
    active = np.flatnonzero(series.requests > 0)
    if not len(active):
        return None
    start = active[0] + p.baseline_skip_s
    window = series.p95_ms[start : start + p.baseline_s]
    window = window[~np.isnan(window)]
    return float(np.median(window)) if len(window) else None


def detect_breaking_point(series: PerSecond, params: BreakingPointParams) -> BreakingPoint:
    """Apply the rule (see the module doc) to a load test's per-second series."""
    p = params
    rule = rule_sentence(p)
    n = len(series)
    if n == 0:
        return BreakingPoint.not_found("no data: the load test recorded no request", rule)
    w = p.smoothing_s
    achieved = _centred(series.achieved_rps, w, "median")
    offered = _centred(series.offered_rps.astype(float), w, "mean")
    p95 = _centred(series.p95_ms, w, "median")
    active = (series.offered_rps > 0) | (series.requests > 0)
    err = _centred(np.where(series.requests > 0, series.error_rate, np.nan), w, "median")

    conds = {
        "throughput": active
        & (offered > 0)
        & (achieved < p.throughput_ratio * offered)
        & (offered - achieved >= p.min_deficit_rps)
        & (offered - achieved > p.noise_sigmas * np.sqrt(np.maximum(offered, 0) / w)),
        "errors": active & (np.nan_to_num(err, nan=0.0) > p.error_rate),
    }
    base = baseline_p95(series, p)
    if base is not None:
        with np.errstate(invalid="ignore"):
            conds["latency"] = (
                active & (p95 > p.latency_factor * base) & (p95 - base >= p.latency_min_increase_ms)
            )
    fired = {}
    for name in CRITERIA:
        if name in conds:
            onset = _first_sustained(np.nan_to_num(conds[name], nan=0).astype(bool), p.sustain_s)
            if onset is not None:
                fired[name] = float(series.t[onset])
    max_rps = float(np.nanmax(achieved)) if np.any(~np.isnan(achieved)) else 0.0
    max_users = int(series.users.max()) if len(series.users) else 0
    if not fired:
        return BreakingPoint.not_found(
            f"no knee within the tested range (up to {max_users} users, "
            f"{max_rps:.1f} req/s achieved)", rule,
            baseline_p95_ms=base, max_achieved_rps=max_rps, max_users=max_users)
    criterion = min(fired, key=lambda k: (fired[k], CRITERIA.index(k)))
    i = int(np.searchsorted(series.t, fired[criterion]))
    users = int(series.users[i])
    earlier = series.users[:i][series.users[:i] < users]
    last_good = int(earlier[-1]) if len(earlier) else None
    return BreakingPoint(
        True,
        users,
        float(series.offered_rps[i]),
        float(achieved[i]),
        None if np.isnan(p95[i]) else float(p95[i]),
        float(series.t[i]),
        series.t0 + float(series.t[i]),
        criterion,
        fired,
        last_good,
        base,
        max_rps,
        max_users,
        message=(
            f"breaking point at {users} users (offered {series.offered_rps[i]:.0f} req/s, "
            f"achieved {achieved[i]:.1f} req/s) after {series.t[i]:.0f} s: {criterion} "
            f"criterion fired first"
        ),
        rule=rule,
    )


def breaking_point_from_dir(
    locust_dir: str | Path, params: BreakingPointParams, *, pacing_s: float = 1.0
) -> BreakingPoint:
    """Detect the breaking point of the load test stored in a Locust output directory."""
    _, _, series = load_run_dir(locust_dir, pacing_s=pacing_s, lag_s=params.lag_s)
    return detect_breaking_point(series, params)


def users_to_hold(bp: BreakingPoint, load_test: Scenario) -> int:
    """The load for max_performance: the breaking point's users, or the highest tested load
    when no knee was found."""
    if bp.found and bp.users:
        return bp.users
    return load_test.max_users or 1
