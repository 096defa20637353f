"""Open-model arrival schedules: when each request should be sent, decided before the run and
independent of how many requests are in flight. Plain Python + numpy, no locust.

A closed-loop user sends its next request only after the previous answer, so a slow system is
offered less load and its slow requests go uncounted (coordinated omission). An open-model
generator sends request k at its scheduled time t_k whatever happened before, and its latency
is measured from t_k (response time), not only from the actual send (service time): wrk2 and
MLPerf LoadGen's server scenario work this way.

Poisson arrivals (exponential inter-arrival times) are the default: independent users of a
real-time scoring API arrive that way. Constant spacing is the optional, burst-free schedule.
A schedule is seeded and recorded, so a run can be replayed and its schedule checked. Split
over n generator processes, each gets an independent stream of rate/n (the superposition of
independent Poisson processes is Poisson with the summed rate; constant streams are phased so
their union is evenly spaced again).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

PROCESSES = ("poisson", "constant")


@dataclass(frozen=True)
class ArrivalProcess:
    rate: float  # requests per second, summed over every stream of the schedule
    process: str = "poisson"
    seed: int = 0
    # This stream's place in a split schedule: stream `index` of `streams`.
    index: int = 0
    streams: int = 1
    # Poisson only: exactly round(stream rate x duration) arrivals, at uniform times (a
    # Poisson process conditioned on its count), so the schedule offers its nominal rate.
    nominal_count: bool = False

    def __post_init__(self) -> None:
        if self.process not in PROCESSES:
            raise ValueError(f"arrival process = {self.process!r}: expected one of "
                             f"{', '.join(PROCESSES)}")
        if not self.rate > 0:
            raise ValueError(f"arrival rate = {self.rate!r}: must be > 0 requests/s")
        if not 0 <= self.index < self.streams:
            raise ValueError(f"stream index {self.index} is not in 0..{self.streams - 1}")

    @property
    def stream_rate(self) -> float:
        return self.rate / self.streams

    def split(self, n: int) -> list[ArrivalProcess]:
        """n independent streams whose union has this process's rate and kind."""
        if n < 1:
            raise ValueError(f"streams = {n!r}: must be >= 1")
        return [replace(self, index=i, streams=n) for i in range(n)]

    def times(self, duration_s: float) -> np.ndarray:
        """Scheduled send times of this stream, in seconds from the schedule's start, in
        [0, duration_s). The same process and duration always give the same times."""
        if duration_s <= 0:
            return np.empty(0)
        rate = self.stream_rate
        if self.process == "constant":
            period = 1.0 / rate
            # phase streams so that their union is evenly spaced at 1/rate
            first = self.index / self.rate
            return np.arange(first, duration_s, period)
        # One generator per (seed, stream): streams are independent and reproducible.
        rng = np.random.default_rng([self.seed, self.index, self.streams])
        if self.nominal_count:
            return np.sort(rng.uniform(0.0, duration_s, size=round(rate * duration_s)))
        out: list[np.ndarray] = []
        t = 0.0
        expected = rate * duration_s
        while t < duration_s:
            gaps = rng.exponential(1.0 / rate, size=max(16, int(expected * 1.1) + 16))
            chunk = t + np.cumsum(gaps)
            out.append(chunk)
            t = float(chunk[-1])
        times = np.concatenate(out)
        return times[times < duration_s]

    def to_dict(self) -> dict:
        return asdict(self)


def merged_times(processes: list[ArrivalProcess], duration_s: float) -> np.ndarray:
    """The union of several streams' schedules, sorted (what the system under test sees)."""
    if not processes:
        return np.empty(0)
    return np.sort(np.concatenate([p.times(duration_s) for p in processes]))


@dataclass(frozen=True)
class OpenModel:
    """An open-model scenario's load: `rate` arrivals per second from `process`, split over
    the Locust processes that run users (one user each drives one stream). A stream keeps at
    most `inflight_cap` requests in flight; a send that must wait for one to finish is
    counted (reported per run, never silent) and its response time still runs from its
    scheduled time."""

    rate: float
    process: str = "poisson"
    seed: int = 0
    inflight_cap: int = 256
    # the whole exchange, so that a hung server cannot hold a stream's slots forever
    request_timeout_s: float = 10.0
    # how long a step runs past its schedule for the last answers; still unanswered then,
    # a request is logged as failed ("unfinished"). None: request_timeout_s.
    drain_s: float | None = None
    nominal_count: bool = False  # see ArrivalProcess

    def __post_init__(self) -> None:
        ArrivalProcess(self.rate, self.process, self.seed)  # validates rate and process
        if self.inflight_cap < 1:
            raise ValueError(f"inflight_cap = {self.inflight_cap!r}: must be >= 1")
        if not self.request_timeout_s > 0:
            raise ValueError(f"request_timeout_s = {self.request_timeout_s!r}: must be > 0")
        if self.drain_s is not None and not self.drain_s >= 0:
            raise ValueError(f"drain_s = {self.drain_s!r}: must be >= 0")

    @property
    def drain(self) -> float:
        return self.request_timeout_s if self.drain_s is None else self.drain_s

    def stream(self, index: int, streams: int) -> ArrivalProcess:
        return ArrivalProcess(self.rate, self.process, self.seed,
                              nominal_count=self.nominal_count).split(streams)[index]

    def to_dict(self) -> dict:
        return asdict(self)
