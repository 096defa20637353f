"""Per-user pacing with spread or in-phase (bursty) arrivals. Plain Python, no locust.

Locust's `constant_pacing(p)` keeps each user on a grid of period p anchored where the user
started; users spawned together (or at exactly 1/s with p = 1 s) stay in phase, and N users
offer one burst of N simultaneous requests per period instead of N requests spread out.
`Pacer` gives each user a random offset in [0, p) before its first request (arrival
"spread") and then keeps the grid offset + k*p; arrival "bursty" uses no offset and
reproduces the original's in-phase behaviour. When a request takes longer than the period,
the next one leaves at once and the grid re-anchors there (as constant_pacing does).
"""

from __future__ import annotations

import random

from experiments.constants import ARRIVALS


class Pacer:
    def __init__(self, pacing_s: float, arrival: str = "spread", rng: random.Random | None = None):
        if arrival not in ARRIVALS:
            raise ValueError(f"arrival = {arrival!r}: expected one of {', '.join(ARRIVALS)}")
        if pacing_s <= 0:
            raise ValueError(f"pacing_s = {pacing_s!r}: must be > 0")
        self.pacing_s = float(pacing_s)
        self.arrival = arrival
        rng = rng or random.Random()
        self.offset_s = rng.uniform(0.0, self.pacing_s) if arrival == "spread" else 0.0
        self._next_due: float | None = None

    def start(self, now: float) -> float:
        """Call when the user starts; returns how long to wait before its first request."""
        self._next_due = now + self.offset_s
        return self.offset_s

    def wait(self, now: float) -> float:
        """Call after each request; returns how long to wait before the next one."""
        if self._next_due is None:
            self._next_due = now
        self._next_due += self.pacing_s
        if self._next_due < now:  # the request overran its period: go now, re-anchor
            self._next_due = now
        return self._next_due - now


def simulate_arrivals(
    n_users: int,
    periods: int,
    pacing_s: float = 1.0,
    arrival: str = "spread",
    seed: int = 0,
    service_s: float = 0.0,
    spawn_at: float = 0.0,
) -> list[float]:
    """Send times of n_users started together at `spawn_at`, over `periods` periods, with a
    fixed service time: a model of what the locustfile does, for tests and the report."""
    rng = random.Random(seed)
    times = []
    for _ in range(n_users):
        pacer = Pacer(pacing_s, arrival, rng)
        t = spawn_at + pacer.start(spawn_at)
        for _ in range(periods):
            times.append(t)
            done = t + service_s
            t = done + pacer.wait(done)
    return sorted(times)
