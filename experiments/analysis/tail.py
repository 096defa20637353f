"""Is a step's p99 within the bound, and how sure are we? A verdict on a latency percentile from
a finite number of requests, with a stated confidence.

A step of n requests, k of which were over the bound (slower, or failed: a failed request got
no answer within the bound), estimates q, the probability that a request is over it. "p99 <=
bound" means q <= 1 %. The point estimate (the step's 99th percentile against the bound) is a
coin flip near the bound: in a 200-request step the p99 is the 2nd or 3rd slowest request, and
committed holds failed by 0.04 ms. So, as MLPerf LoadGen's early-stopping rule does, the verdict
uses the exact (Clopper-Pearson) one-sided confidence bounds on q:

- pass: the upper bound of q at `confidence` is <= 1 - quantile (the tail is within the bound
  even if this step was lucky);
- fail: the lower bound of q at `confidence` is > 1 - quantile (over, even if unlucky);
- undecided: the interval straddles the bound: the step is too short to tell, and the search
  measures it again, longer (experiments/lab/capacity.py), or counts it as not passing.

At 95 % and p99 a step needs 299 requests with none over the bound before it can pass at all
(`requests_to_pass`), 473 with one, 628 with two: the request count of a step follows from the
confidence wanted near the bound. A rate whose true q is exactly 1 % stays undecided however
long it is measured; the search then takes the conservative side (not passed).

Each look is a test at `confidence`; the search takes at most a few looks at one rate (one
extension), so the error rate of the sequence stays near the stated one (at most doubled in the
worst case, by a union bound over the two looks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import beta

PASS, FAIL, UNDECIDED = "pass", "fail", "undecided"


def exceedance_bounds(over: int, n: int, confidence: float) -> tuple[float, float]:
    """One-sided Clopper-Pearson bounds (lower, upper) on the probability that a request is over
    the bound, from `over` of `n` requests, each at `confidence`."""
    if n < 1 or not 0 <= over <= n:
        raise ValueError(f"need 0 <= over ({over}) <= n ({n}) and n >= 1")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence = {confidence!r}: must be in (0, 1)")
    alpha = 1.0 - confidence
    lower = 0.0 if over == 0 else float(beta.ppf(alpha, over, n - over + 1))
    upper = 1.0 if over == n else float(beta.ppf(confidence, over + 1, n - over))
    return lower, upper


@dataclass(frozen=True)
class TailVerdict:
    outcome: str  # pass, fail or undecided
    over: int  # requests over the bound (failed ones included)
    n: int
    lower: float  # bounds on the share of requests over the bound
    upper: float

    @property
    def share(self) -> float:
        return self.over / self.n


def tail_verdict(over: int, n: int, quantile: float = 0.99,
                 confidence: float = 0.95) -> TailVerdict:
    """Whether the `quantile` of the latency is within the bound, at `confidence`, from `over`
    of `n` requests over it (see the module's docstring)."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile = {quantile!r}: must be in (0, 1)")
    lower, upper = exceedance_bounds(over, n, confidence)
    allowed = 1.0 - quantile
    outcome = PASS if upper <= allowed else FAIL if lower > allowed else UNDECIDED
    return TailVerdict(outcome, over, n, lower, upper)


def requests_to_pass(quantile: float = 0.99, confidence: float = 0.95, over: int = 0) -> int:
    """The fewest requests with `over` of them over the bound that can pass: a step shorter
    than this can only fail or stay undecided."""
    allowed = 1.0 - quantile
    if over == 0:  # upper bound 1 - (1 - confidence)^(1/n) <= allowed
        return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - allowed))
    n = max(over + 1, math.ceil(over / allowed))
    while exceedance_bounds(over, n, confidence)[1] > allowed:
        n = max(n + 1, math.ceil(n * 1.02))
    # step back to the smallest n that still passes (the loop may overshoot by 2 %)
    while n - 1 > over and exceedance_bounds(over, n - 1, confidence)[1] <= allowed:
        n -= 1
    return n


def requests_to_decide(over: int, n: int, quantile: float = 0.99,
                       confidence: float = 0.95) -> int | None:
    """How many requests a longer measurement of an undecided step needs to decide, if the share
    over the bound stays what this step saw: None when that share is the bound itself (only
    the conservative side is left)."""
    allowed = 1.0 - quantile
    share = over / n
    if math.isclose(share, allowed, rel_tol=1e-9):
        return None
    m = n
    for _ in range(20):  # doubling: a million times the step is beyond any measurement
        m *= 2
        k = round(share * m)
        if tail_verdict(k, m, quantile, confidence).outcome != UNDECIDED:
            return m
    return None
