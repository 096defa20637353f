"""Statistics for comparing the two architectures, in pyperf's spirit: a mean with its
confidence interval, a stability warning when the spread is large (std dev >= 10 % of the
mean), and a comparison that reports a ratio with its significance and says "not
significant" instead of naming a winner when the data cannot tell.

Percentiles here are computed from exact per-request timings (numpy's linear
interpolation), never from Locust's rounded stats.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

STABILITY_LIMIT = 0.10  # pyperf: std dev >= 10 % of the mean is "unstable"


def _arr(values: Iterable[float]) -> np.ndarray:
    a = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    return a[~np.isnan(a)]


def percentiles(values: Iterable[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """{"p50": .., "p95": .., "p99": ..} (NaN for an empty sample)."""
    a = _arr(values)
    if not len(a):
        return {f"p{q:g}": math.nan for q in qs}
    return {f"p{q:g}": float(v) for q, v in zip(qs, np.percentile(a, qs), strict=True)}


def stability_warning(values: Iterable[float], limit: float = STABILITY_LIMIT) -> str | None:
    """A warning when the sample's std dev is >= limit x its mean (None when stable)."""
    a = _arr(values)
    if len(a) < 2:
        return None
    mean, std = float(a.mean()), float(a.std(ddof=1))
    if mean == 0:
        return None if std == 0 else "mean is 0 with a non-zero spread: unstable"
    if std / abs(mean) >= limit:
        return (
            f"unstable: std dev {std:.3g} is {std / abs(mean):.0%} of the mean {mean:.3g} "
            f"(>= {limit:.0%})"
        )
    return None


@dataclass(frozen=True)
class MeanCI:
    n: int
    mean: float
    std: float
    low: float
    high: float
    confidence: float
    warning: str | None

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        half = (self.high - self.low) / 2
        return f"{self.mean:.4g} ± {half:.2g} ({self.confidence:.0%} CI, n={self.n})"


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> MeanCI:
    """Mean with a Student-t confidence interval (std dev with ddof=1)."""
    a = _arr(values)
    n = len(a)
    if n == 0:
        return MeanCI(0, math.nan, math.nan, math.nan, math.nan, confidence, "no data")
    mean = float(a.mean())
    if n == 1:
        return MeanCI(
            1, mean, math.nan, math.nan, math.nan, confidence, "a single value: no interval"
        )
    std = float(a.std(ddof=1))
    half = float(sps.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return MeanCI(n, mean, std, mean - half, mean + half, confidence, stability_warning(a))


@dataclass(frozen=True)
class TestResult:
    test: str
    statistic: float
    p_value: float

    def to_dict(self) -> dict:
        return asdict(self)


def welch_t(a: Iterable[float], b: Iterable[float]) -> TestResult:
    """Welch's t-test (unequal variances), two-sided. p = 1 when both samples are constant
    and equal, 0 when constant and different."""
    x, y = _arr(a), _arr(b)
    if len(x) < 2 or len(y) < 2:
        return TestResult("welch_t", math.nan, math.nan)
    if x.std() == 0 and y.std() == 0:
        return TestResult("welch_t", math.nan, 1.0 if x.mean() == y.mean() else 0.0)
    with warnings.catch_warnings():  # near-identical samples: a precision-loss warning
        warnings.simplefilter("ignore", RuntimeWarning)
        r = sps.ttest_ind(x, y, equal_var=False)
    return TestResult("welch_t", float(r.statistic), float(r.pvalue))


def mann_whitney(a: Iterable[float], b: Iterable[float]) -> TestResult:
    """Mann-Whitney U, two-sided (for skewed samples such as latencies)."""
    x, y = _arr(a), _arr(b)
    if len(x) < 1 or len(y) < 1:
        return TestResult("mann_whitney", math.nan, math.nan)
    if np.all(x == x[0]) and np.all(y == y[0]) and x[0] == y[0]:
        return TestResult("mann_whitney", math.nan, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = sps.mannwhitneyu(x, y, alternative="two-sided")
    return TestResult("mann_whitney", float(r.statistic), float(r.pvalue))


@dataclass(frozen=True)
class Comparison:
    """b relative to a: ratio = center(b) / center(a) (mean for Welch, median for
    Mann-Whitney). `verdict` is a short sentence; `significant` False means the data do
    not separate the two."""

    label_a: str
    label_b: str
    n_a: int
    n_b: int
    center: str
    center_a: float
    center_b: float
    ratio: float
    test: str
    p_value: float
    alpha: float
    significant: bool
    verdict: str
    warnings: tuple[str, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        return d


def compare(
    a: Iterable[float],
    b: Iterable[float],
    *,
    test: str = "welch",
    alpha: float = 0.05,
    min_effect: float = 0.0,
    label_a: str = "sync",
    label_b: str = "async",
) -> Comparison:
    """Compare sample b with sample a. test: "welch" (means) or "mannwhitney" (medians).
    A significant difference smaller than min_effect (relative) is reported as no
    meaningful difference."""
    x, y = _arr(a), _arr(b)
    if test == "welch":
        center, ca, cb = (
            "mean",
            float(x.mean()) if len(x) else math.nan,
            float(y.mean()) if len(y) else math.nan,
        )
        tr = welch_t(x, y)
    elif test in ("mannwhitney", "mann_whitney"):
        center, ca, cb = (
            "median",
            float(np.median(x)) if len(x) else math.nan,
            float(np.median(y)) if len(y) else math.nan,
        )
        tr = mann_whitney(x, y)
    else:
        raise ValueError(f"test = {test!r}: expected 'welch' or 'mannwhitney'")
    ratio = cb / ca if ca not in (0.0,) and not math.isnan(ca) else math.nan
    notes = tuple(
        f"{lab}: {w}" for lab, s in ((label_a, x), (label_b, y)) if (w := stability_warning(s))
    )
    if math.isnan(tr.p_value):
        significant = False
        verdict = "not enough data to compare"
    elif tr.p_value >= alpha:
        significant = False
        verdict = f"not significant (p = {tr.p_value:.2g})"
    elif not math.isnan(ratio) and abs(ratio - 1) < min_effect:
        significant = True
        verdict = (
            f"{label_b}/{label_a} = {ratio:.3f}: significant (p = {tr.p_value:.2g}) but "
            f"below {min_effect:.0%}, no meaningful difference"
        )
    elif math.isnan(ratio):
        significant = True
        verdict = f"{label_a} and {label_b} differ (significant, p = {tr.p_value:.2g})"
    else:
        significant = True
        verdict = f"{label_b}/{label_a} = {ratio:.2f}x (significant, p = {tr.p_value:.2g})"
    return Comparison(
        label_a,
        label_b,
        len(x),
        len(y),
        center,
        ca,
        cb,
        ratio,
        tr.test,
        tr.p_value,
        alpha,
        significant,
        verdict,
        notes,
    )


CV_LIMIT = 0.10  # a headline figure whose repeats vary by more than this is flagged unstable
# Below this many repeats no interval of the median reaches a useful confidence (the min-max
# range of n values covers the median with probability 1 - 2^(1-n): 50 % at 2, 75 % at 3,
# 87.5 % at 4), so the spread is shown as the range and called that, with no confidence.
MIN_REPEATS_FOR_INTERVAL = 5
RANGE = "range"
ORDER_STATISTIC = "order_statistic"


def median_interval_ranks(n: int, confidence: float = 0.95) -> tuple[int, float]:
    """(k, coverage) of the distribution-free interval for the median of n values: from the
    k-th smallest to the k-th largest, which holds the population median with probability
    1 - 2 P(Binomial(n, 1/2) <= k - 1), whatever the distribution (continuous). The narrowest
    such interval whose coverage is at least `confidence`; when none is (n = 5: the min-max
    range's 93.75 %), the range (k = 1) and its own coverage, which the label then states."""
    if n < 2:
        raise ValueError(f"n = {n}: an interval needs at least 2 values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence = {confidence}: expected a fraction in (0, 1)")

    def coverage(k: int) -> float:
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n

    k = 1
    while k + 1 <= n // 2 and coverage(k + 1) >= confidence:
        k += 1
    return k, coverage(k)


def percent(fraction: float) -> str:
    """A coverage as the label states it: 93.75 %, 96.88 %, 95 % (two decimals at most)."""
    return f"{fraction * 100:.2f}".rstrip("0").rstrip(".") + " %"


@dataclass(frozen=True)
class RepeatSummary:
    """One headline figure over the repeats of a run: the median, the spread around it, the
    coefficient of variation (std dev / mean) and whether it exceeds CV_LIMIT. The spread is
    over whole repeats, so it carries run-to-run variation (connection assignment, worker
    placement), not the spread of requests within one run.

    `interval` says what low-high is: "range" (2 to MIN_REPEATS_FOR_INTERVAL - 1 values: the
    min-max range, no confidence claimed), "order_statistic" (the distribution-free interval
    of the median, `confidence` its exact coverage), "" (fewer than 2 values: none)."""

    n: int
    median: float
    low: float
    high: float
    cv: float
    unstable: bool
    values: tuple[float, ...]
    interval: str = ""
    confidence: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["values"] = list(self.values)
        return d


def interval_label(interval: str, confidence: float | None, n: int) -> str:
    """What a summary's low-high is, in words: the one label every report and the index use."""
    if interval == RANGE:
        return f"range of {n}"
    if interval == ORDER_STATISTIC and confidence is not None:
        return f"{percent(confidence)} interval of the median (order statistics, n = {n})"
    return "no interval (one value)" if n == 1 else "no interval"


def repeat_summary(values: Iterable[float], confidence: float = 0.95) -> RepeatSummary:
    """Median, spread and CV of one figure's per-repeat values. NaN repeats (a figure a repeat
    could not measure) are left out; fewer than two values give no interval and no CV. The
    spread is the range below MIN_REPEATS_FOR_INTERVAL values, else the order-statistic
    interval of the median at `confidence` (or its exact coverage where n allows no more)."""
    a = _arr(values)
    n = len(a)
    if n == 0:
        return RepeatSummary(0, math.nan, math.nan, math.nan, math.nan, False, ())
    median = float(np.median(a))
    if n == 1:
        return RepeatSummary(1, median, math.nan, math.nan, math.nan, False, (float(a[0]),))
    ordered = np.sort(a)
    if n < MIN_REPEATS_FOR_INTERVAL:
        k, interval, conf = 1, RANGE, None
    else:
        k, conf = median_interval_ranks(n, confidence)
        interval = ORDER_STATISTIC
    mean = float(a.mean())
    cv = float(a.std(ddof=1) / abs(mean)) if mean else (0.0 if np.all(a == 0) else math.inf)
    return RepeatSummary(n, median, float(ordered[k - 1]), float(ordered[n - k]), cv,
                         cv > CV_LIMIT, tuple(map(float, a)), interval, conf)
