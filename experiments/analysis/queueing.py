"""A queueing prediction of a rung's *bounded* capacity: the highest Poisson arrival rate whose
p99 response time stays within the latency bound, beside the saturation ceiling of
experiments/analysis/ceiling.py (which predicts the rate at utilisation 1 and knows no bound).

Three parts, pure functions over numbers (no I/O):

1. **M/D/c, numerically exact** (``md_c_response_quantile``). Crommelin's argument (as Franx,
   Queueing Systems 37, 2001, writes it): with FCFS and one service time D, the customers in
   the system D later are ``max(N - c, 0)`` of those present now plus the arrivals in between,
   so ``N(t + D) = max(N(t) - c, 0) + Poisson(lambda D)`` is a Markov chain whose stationary law
   is the time-stationary one (solved here as a truncated linear system, the truncation grown
   until the tail it cuts off is below 1e-12). A tagged arrival waits at most ``k D + u``
   (0 <= u < D) exactly when the queue ``Q = max(N - c, 0)`` seen D - u earlier plus the
   Poisson(lambda (D - u)) arrivals since then is at most ``(k + 1) c - 1``. Exact (up to the
   truncation and float rounding), fast, and free of simulation noise, so the capacity it gives
   by bisection is a fixed number a test can hold a closed form against.
2. **M/G/c by simulation** (``mgc_response_quantile``): the Kiefer-Wolfowitz recursion (each
   arrival, in order, takes the server that frees first), any service-time sample, a seeded
   numpy Generator. Used for what has no closed form; checked against Erlang C.
3. **The lab's topology** (``Topology``, ``topology_p99``, ``predict``): a small simulation of
   one rung, built from the quantities a run folder records (what ceiling.py takes per rung,
   ``topology_from_services``). Per request, in order: a fixed overhead (what the 1-user
   latency has beyond the parts below), CPU bursts of the scoring handler, Redis's CPU, and
   ``calls`` model calls (sequential, or concurrent and joined), each a CPU burst of the model
   API then its sleep ~ U(sleep_min, sleep_max) plus the model API's own overhead. Stages:

   - **scoring slots** (a blocking server: workers x threads): a request holds a slot for its
     whole path; slots are one FCFS pool (a shared accept queue: a blocking worker accepts a new
     connection only when it is free, and a load-generator connection comes back to the pool
     when its worker answered, so the next request lands on a free worker). An event loop
     (uvicorn, patched meinheld, gevent) has no slot stage.
   - **CPU**: every CPU burst of every service on a CPU set queues FCFS for that set's cores
     (services whose sets overlap share them, as in ceiling.py). A request's burst started at t
     waits the set's workload at t, read off one Poisson stream of all requests' bursts
     (lambda x bursts per request; its Lindley recursion is vectorised), so the waits of one
     request's successive bursts keep their correlation in time. FCFS, not processor sharing:
     a burst is ~0.1-1 ms, shorter than the scheduler's time slice, so it runs to completion.
     c cores are one server c times as fast (exact for c = 1, which is every committed run).
   - **model slots** (a blocking model API): queueing there is possible only when the calls
     in flight can outnumber its slots (an event-loop caller, or fewer model slots than
     scoring slots); then calls queue FCFS in the order they are issued, found by a few passes
     (issue times without waits -> FCFS waits -> later issue times -> ...), not exactly.

   The slot stage is solved twice: the path times of pass one (bursts at arrival times) give
   each request's start; pass two reads the CPU at those starts. Arrivals and service draws
   come from ``numpy.random.default_rng(seed)`` as rate-free unit quantities scaled by the
   rate (common random numbers), so a higher rate never gives a lower simulated p99 by chance
   and the bisection is deterministic for a seed. A request's CPU waits are read off the
   stream's workload rather than its own bursts being in it: an approximation of the same
   order as the stream's Poisson assumption. 20,000 requests per rate put a p99 within a few
   per cent of the stationary one; a prediction (one bisection) takes about 0.5-3 s.

   CPU per request may be given per rate (``predict(cpu_by_rate=...)``, from a capacity
   search's passed steps): a stack's CPU per request moves with its load, and the ramp's
   figure (measured at low concurrency) misses that. Beyond the measured rates it is held
   flat; where it falls with the rate the simulated p99 need not grow with it.

   Not in the model (what the committed runs' misses point at): a CPU cost that grows with
   requests in flight (httpx's pool: the default async build's positive feedback), keep-alive
   connections that pin a blocking scoring worker to one model worker (the model's model
   workers are one shared pool), per-worker accept queues (gthread) and threads waiting for the
   GIL, an event loop stalled by blocking calls (the original async handler), and the capacity
   search's own bias (short steps from an empty queue judge a p99 on 160-250 requests).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy import sparse, stats
from scipy.sparse.linalg import spsolve

from experiments.analysis.ceiling import ServiceInput, cpu_groups
from services.settings import Arch, settings_from_env

P99 = 0.99
MAX_STATES = 400_000  # M/D/c chain truncation limit (a utilisation this close to 1 is refused)
TAIL_MASS = 1e-12
MODEL_PASSES = 4  # issue times -> model-slot waits -> issue times (see topology_p99)


def _positive(name: str, value: float) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _servers(c: int) -> int:
    if not isinstance(c, int | np.integer) or isinstance(c, bool) or c < 1:
        raise ValueError(f"servers must be an integer >= 1, got {c!r}")
    return int(c)


def _quantile(q: float) -> float:
    if not isinstance(q, int | float) or not 0 < q < 1:
        raise ValueError(f"quantile must be in (0, 1), got {q!r}")
    return float(q)


# ------------------------------------------------------------------------------------ M/D/c

def md_c_queue_pmf(lam: float, c: int, d: float) -> np.ndarray:
    """Stationary law of the queue length Q = max(N - c, 0) of an M/D/c queue (index j:
    P(Q = j)), from the chain N(t + D) = max(N(t) - c, 0) + Poisson(lam D)."""
    lam, d, c = _positive("arrival rate", lam), _positive("service time", d), _servers(c)
    a = lam * d
    if a >= c:
        raise ValueError(f"utilisation lam*D/c = {a / c:.3f} >= 1: no stationary queue "
                         f"(arrival rate {lam}, service {d}, {c} servers)")
    # the chain's queue tail decays about like exp(-2 (1 - rho) j / rho) (heavy traffic)
    size = int(c + a + 10 * math.sqrt(a + 1) + 20 / (1 - a / c))
    support = int(a + 12 * math.sqrt(a) + 30)  # more arrivals per D: probability < 1e-17
    arrivals = stats.poisson.pmf(np.arange(support), a)
    while True:
        size = min(size, MAX_STATES)
        pi = _stationary(size, c, arrivals)
        if pi[-max(c, 10):].sum() < TAIL_MASS:
            break
        if size >= MAX_STATES:
            raise ValueError(f"utilisation {a / c:.6f} too close to 1 for the M/D/c chain "
                             f"({MAX_STATES} states do not hold its tail)")
        size *= 2
    q = np.zeros(size - c)
    q[0] = pi[: c + 1].sum()
    q[1:] = pi[c + 1:]
    return q


def _stationary(size: int, c: int, arrivals: np.ndarray) -> np.ndarray:
    """Stationary law of N(t + D) = max(N(t) - c, 0) + A on states 0..size-1 (what would go
    beyond lands on the last state), solved as a sparse linear system."""
    i = np.arange(size)
    rows = np.repeat(i, len(arrivals))
    cols = np.minimum((np.maximum(i - c, 0)[:, None] + np.arange(len(arrivals))).ravel(),
                      size - 1)
    vals = np.tile(arrivals, size)
    # pi (P - I) = 0 and sum(pi) = 1: the last balance equation gives way to the normalisation
    keep = cols != size - 1
    diag = np.arange(size - 1)
    a_rows = np.concatenate((cols[keep], diag, np.full(size, size - 1)))
    a_cols = np.concatenate((rows[keep], diag, i))
    a_vals = np.concatenate((vals[keep], -np.ones(size - 1), np.ones(size)))
    system = sparse.csr_matrix((a_vals, (a_rows, a_cols)), shape=(size, size))
    rhs = np.zeros(size)
    rhs[-1] = 1.0
    pi = np.clip(spsolve(system, rhs), 0.0, None)
    return pi / pi.sum()


def md_c_wait_cdf(x: float, lam: float, c: int, d: float,
                  queue_pmf: np.ndarray | None = None) -> float:
    """P(W <= x) for the waiting time W (before service) of an M/D/c FCFS queue."""
    if not isinstance(x, int | float) or not x >= 0:
        raise ValueError(f"waiting time must be >= 0, got {x!r}")
    q = md_c_queue_pmf(lam, c, d) if queue_pmf is None else queue_pmf
    cdf_q = np.cumsum(q)
    k = int(x // d)
    u = x - k * d
    top = (k + 1) * c - 1
    j = np.arange(top + 1)
    idx = np.minimum(top - j, len(cdf_q) - 1)
    return float(np.sum(stats.poisson.pmf(j, lam * (d - u)) * cdf_q[idx]))


def md_c_response_quantile(lam: float, c: int, d: float, q: float = P99) -> float:
    """The q-quantile of the response time (wait + D) of an M/D/c FCFS queue, seconds."""
    q = _quantile(q)
    pmf = md_c_queue_pmf(lam, c, d)
    if md_c_wait_cdf(0.0, lam, c, d, pmf) >= q:
        return float(d)
    cdf_q = np.cumsum(pmf)
    # F_W((k+1)D^-) = P(Q <= (k+1)c - 1): the first period whose end reaches q holds the answer
    k = 0
    while cdf_q[min((k + 1) * c - 1, len(cdf_q) - 1)] < q:
        k += 1
    lo, hi = k * d, (k + 1) * d
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if md_c_wait_cdf(mid, lam, c, d, pmf) >= q:
            hi = mid
        else:
            lo = mid
    return float(hi + d)


# ------------------------------------------------------------------------ FCFS simulation

def fcfs_starts(arrivals: np.ndarray, service: np.ndarray, servers: int) -> np.ndarray:
    """Start of service of each customer (arrivals sorted) at `servers` FCFS servers: the
    Kiefer-Wolfowitz recursion; one server: Lindley's, vectorised."""
    servers = _servers(servers)
    n = len(arrivals)
    if n == 0:
        return np.zeros(0)
    if servers == 1:
        # W_m = X_m - min_{j<=m} X_j, X the running sum of (service - next gap)
        x = np.concatenate(([0.0], np.cumsum(service[:-1] - np.diff(arrivals))))
        return arrivals + x - np.minimum.accumulate(x)
    # if no arrival ever finds every server busy, nobody waits (the common case for large pools):
    # customers in service at arrival i = i - the ends (of earlier ones; later ones end after)
    # already passed
    ends = np.sort(arrivals + service)
    busy = np.arange(n) - np.searchsorted(ends, arrivals, side="right")
    if servers >= n or np.max(busy) < servers:
        return arrivals.copy()
    free = [0.0] * servers
    starts = np.empty(n)
    a, s = arrivals.tolist(), service.tolist()
    for i in range(n):
        f = heapq.heappop(free)
        st = a[i] if a[i] > f else f
        starts[i] = st
        heapq.heappush(free, st + s[i])
    return starts


def mgc_response_quantile(lam: float, c: int, service: Callable[[np.random.Generator, int],
                          np.ndarray], q: float = P99, n: int = 200_000, seed: int = 1,
                          warmup: float = 0.05) -> float:
    """The q-quantile of the response time of an M/G/c FCFS queue by simulation: `service`
    draws n service times from the Generator; the first `warmup` share of customers (the
    queue starts empty) is left out."""
    lam, c, q = _positive("arrival rate", lam), _servers(c), _quantile(q)
    if n < 1000:
        raise ValueError(f"n must be >= 1000 customers for a tail quantile, got {n}")
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0, n)) / lam
    s = np.asarray(service(rng, n), dtype=float)
    resp = fcfs_starts(arrivals, s, c) - arrivals + s
    return float(np.quantile(resp[int(n * warmup):], q))


# ------------------------------------------------------------------------------ bisection

def bounded_capacity(p99_at: Callable[[float], float], bound_s: float, upper_rps: float,
                     rel_precision: float = 0.002) -> float:
    """The highest arrival rate in (0, upper_rps] whose p99_at(rate) <= bound_s, by bisection
    to rel_precision (p99_at must not decrease with the rate). 0.0 when every rate down to
    upper_rps * rel_precision fails; upper_rps when upper_rps itself passes."""
    bound_s, upper_rps = _positive("bound", bound_s), _positive("upper rate", upper_rps)
    rel_precision = _positive("relative precision", rel_precision)
    if p99_at(upper_rps) <= bound_s:
        return upper_rps
    # bracket from the top down by halves (most capacities lie in the upper half), then bisect
    hi, lo = upper_rps, upper_rps / 2
    while p99_at(lo) > bound_s:
        hi, lo = lo, lo / 2
        if lo < upper_rps * rel_precision:
            return 0.0
    while hi - lo > rel_precision * lo:
        mid = 0.5 * (lo + hi)
        if p99_at(mid) <= bound_s:
            lo = mid
        else:
            hi = mid
    return lo


def md_c_bounded_capacity(c: int, d: float, bound_s: float, q: float = P99) -> float:
    """Highest Poisson rate an M/D/c queue serves with its q-quantile response <= bound_s."""
    c, d, bound_s = _servers(c), _positive("service time", d), _positive("bound", bound_s)
    if bound_s < d:
        return 0.0
    def p99_at(lam: float) -> float:
        return md_c_response_quantile(lam, c, d, q)

    # Bracket first: utilisation 1 - 2^-k until the bound fails (the chain near utilisation 1
    # is large; the p99 passes the bound long before).
    for k in range(1, 40):
        upper = c / d * (1 - 0.5 ** k)
        if p99_at(upper) > bound_s:
            return bounded_capacity(p99_at, bound_s, upper)
    return upper


# ------------------------------------------------------------------- the lab's topology

@dataclass(frozen=True)
class CpuSet:
    """One set of cores and the CPU seconds each service on it spends per scoring request."""

    cores: int
    cpu_s: Mapping[str, float]  # service name -> CPU seconds per scoring request


@dataclass(frozen=True)
class Topology:
    """One rung, as a run folder records it (see topology_from_services).

    scoring_slots / model_slots: requests a blocking server holds at once (workers x threads),
    None for an event loop. overhead_s: per request, time that is neither CPU measured under
    load nor a model sleep (the 1-user latency minus those). model_overhead_s: per call, the
    model API's own latency beyond its sleep and its CPU. sleep_s: the fake model's sleep
    range. cpu: the CPU sets; scoring/model/redis name the services in their cpu_s maps."""

    scoring_slots: int | None
    model_slots: int | None
    calls: int
    sequential: bool
    sleep_s: tuple[float, float]
    cpu: tuple[CpuSet, ...]
    overhead_s: float = 0.0
    model_overhead_s: float = 0.0
    scoring: str = "scoring"
    model: str = "model"
    redis: str = "redis"
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("scoring_slots", "model_slots"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be None (event loop) or an integer >= 1, "
                                 f"got {v!r}")
        if not isinstance(self.calls, int) or self.calls < 1:
            raise ValueError(f"calls must be an integer >= 1, got {self.calls!r}")
        lo, hi = self.sleep_s
        if not 0 <= lo <= hi:
            raise ValueError(f"sleep_s must be (min, max) with 0 <= min <= max, got "
                             f"{self.sleep_s!r}")
        for name in ("overhead_s", "model_overhead_s"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be >= 0, got {v!r}")
        for cs in self.cpu:
            if not isinstance(cs.cores, int) or cs.cores < 1:
                raise ValueError(f"a CPU set needs an integer >= 1 of cores, got {cs.cores!r}")
            for k, v in cs.cpu_s.items():
                if not math.isfinite(v) or v < 0:
                    raise ValueError(f"CPU per request of {k} must be >= 0, got {v!r}")

    def path_s(self) -> float:
        """Mean time of one request's path at no load (no queueing anywhere)."""
        lo, hi = self.sleep_s
        call = self.model_overhead_s + self._cpu_of(self.model) / self.calls
        if self.sequential:
            calls = self.calls * ((lo + hi) / 2 + call)
        else:  # E[max of n iid U(lo, hi)] = lo + (hi - lo) n / (n + 1)
            calls = lo + (hi - lo) * self.calls / (self.calls + 1) + call
        return (self.overhead_s + calls + self._cpu_of(self.scoring)
                + self._cpu_of(self.redis))

    def _cpu_of(self, service: str) -> float:
        return sum(cs.cpu_s.get(service, 0.0) for cs in self.cpu)

    def saturation_rps(self) -> float:
        """Utilisation 1 of the tightest stage (slots by Little's law, or a CPU set)."""
        caps = [cs.cores / sum(cs.cpu_s.values()) for cs in self.cpu if sum(cs.cpu_s.values())]
        if self.scoring_slots is not None:
            caps.append(self.scoring_slots / self.path_s())
        if self.model_slots is not None:
            lo, hi = self.sleep_s
            hold = (lo + hi) / 2 + self.model_overhead_s + self._cpu_of(self.model) / self.calls
            caps.append(self.model_slots / (hold * self.calls))
        if not caps:
            raise ValueError("no stage limits this topology (no slots, no CPU measured)")
        return min(caps)


def _cpu_waits(topo: Topology, rate: float, horizon_n: int, rng: np.random.Generator):
    """Per CPU set, the workload seen at a time t: one Poisson stream of every request's
    bursts (rate x bursts per request, sizes drawn from one request's bursts), FCFS."""
    bursts = _bursts(topo)
    lookups = []
    for cs, sizes in zip(topo.cpu, bursts, strict=True):
        if not sizes:
            lookups.append(None)
            continue
        m = int(horizon_n * len(sizes) * 1.3) + 2000  # covers the requests' span and beyond
        arr = np.cumsum(rng.exponential(1.0, m)) / (rate * len(sizes))
        size = np.asarray(sizes)[rng.integers(0, len(sizes), m)] / cs.cores
        x = np.concatenate(([0.0], np.cumsum(size[:-1] - np.diff(arr))))
        after = x - np.minimum.accumulate(x) + size  # workload just after each burst arrives
        lookups.append((arr, after))
    return lookups


def _bursts(topo: Topology) -> list[list[float]]:
    """Per CPU set, the sizes of one request's bursts on it: the scoring handler's CPU in
    calls + 3 bursts (request in, Redis reply, each model reply, answer out), the model API's
    one per call, Redis's one."""
    out = []
    for cs in topo.cpu:
        sizes = []
        n_scoring = topo.calls + 3
        for name, count in ((topo.scoring, n_scoring), (topo.model, topo.calls),
                            (topo.redis, 1)):
            c = cs.cpu_s.get(name, 0.0)
            if c > 0:
                sizes += [c / count] * count
        out.append(sizes)
    return out


def _cpu_step(t: np.ndarray, service: str, topo: Topology, lookups, count: int) -> np.ndarray:
    """Run one burst of `service` starting at times t: wait for its CPU set, then run."""
    for cs, lk in zip(topo.cpu, lookups, strict=True):
        c = cs.cpu_s.get(service, 0.0)
        if c <= 0 or lk is None:
            continue
        arr, after = lk
        idx = np.searchsorted(arr, t, side="right") - 1
        wait = np.where(idx >= 0, np.maximum(after[np.maximum(idx, 0)] - (t - arr[np.maximum(
            idx, 0)]), 0.0), 0.0)
        t = t + wait + c / count
    return t


def _path(topo: Topology, start: np.ndarray, sleeps: np.ndarray, lookups,
          model_wait: np.ndarray | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """End time of each request's path begun at `start`; also each call's start (for the
    model-slot pass)."""
    k = topo.calls + 3
    t = start + topo.overhead_s
    t = _cpu_step(t, topo.scoring, topo, lookups, k)
    t = _cpu_step(t, topo.redis, topo, lookups, 1)
    t = _cpu_step(t, topo.scoring, topo, lookups, k)
    call_starts = []

    def call(t0: np.ndarray, j: int) -> np.ndarray:
        call_starts.append(t0)
        if model_wait is not None:
            t0 = t0 + model_wait[:, j]
        t1 = _cpu_step(t0, topo.model, topo, lookups, topo.calls)
        t1 = t1 + sleeps[:, j] + topo.model_overhead_s
        return _cpu_step(t1, topo.scoring, topo, lookups, k)

    if topo.sequential:
        for j in range(topo.calls):
            t = call(t, j)
    else:
        t = np.max(np.stack([call(t, j) for j in range(topo.calls)]), axis=0)
    return _cpu_step(t, topo.scoring, topo, lookups, k), call_starts


def topology_p99(topo: Topology, rate: float, n: int = 20_000, seed: int = 1,
                 q: float = P99, warmup: float = 0.1) -> float:
    """The simulated q-quantile of the response time (from each request's arrival) of the
    topology at Poisson `rate`, seconds; the first `warmup` share of requests is left out."""
    rate, q = _positive("arrival rate", rate), _quantile(q)
    if n < 1000:
        raise ValueError(f"n must be >= 1000 requests for a tail quantile, got {n}")
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0, n)) / rate
    lo, hi = topo.sleep_s
    sleeps = lo + (hi - lo) * rng.random((n, topo.calls))
    lookups = _cpu_waits(topo, rate, n, rng)
    model_wait = None
    if topo.model_slots is not None and topo.model_slots < _callers(topo):
        # calls in flight can outnumber the model's slots: the calls queue FCFS in the order
        # they are issued, and when a call is issued depends on the waits before it; a few
        # passes (issue times -> FCFS waits -> issue times) settle it
        hold = sleeps.T.ravel() + topo.model_overhead_s + topo._cpu_of(topo.model) / topo.calls
        model_wait = np.zeros((n, topo.calls))
        for _ in range(MODEL_PASSES):
            _, starts = _path(topo, arrivals, sleeps, lookups, model_wait)
            issued = np.concatenate(starts)
            order = np.argsort(issued, kind="stable")
            wait = np.empty(len(issued))
            wait[order] = fcfs_starts(issued[order], hold[order], topo.model_slots) - issued[order]
            model_wait = wait.reshape(topo.calls, n).T
    if topo.scoring_slots is None:
        end, _ = _path(topo, arrivals, sleeps, lookups, model_wait)
    else:
        start = arrivals
        for _ in range(2):  # pass 2 reads the CPU at the starts pass 1 found
            end, _ = _path(topo, start, sleeps, lookups, model_wait)
            start = fcfs_starts(arrivals, end - start, topo.scoring_slots)
        end, _ = _path(topo, start, sleeps, lookups, model_wait)
    resp = end - arrivals
    return float(np.quantile(resp[int(n * warmup):], q))


def _callers(topo: Topology) -> float:
    """Most model calls that can be in flight at once (inf: an event loop's are unbounded)."""
    if topo.scoring_slots is None:
        return math.inf
    return topo.scoring_slots * (1 if topo.sequential else topo.calls)


@dataclass(frozen=True)
class Prediction:
    """The bounded capacity a topology predicts, and what it rests on."""

    capacity_rps: float | None
    bound_ms: float
    saturation_rps: float | None
    method: str
    inputs: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def predict(topo: Topology, bound_s: float, n: int = 20_000, seed: int = 1,
            q: float = P99, cpu_by_rate: Sequence[tuple[float, Mapping[str, float]]] = ()
            ) -> Prediction:
    """The highest Poisson rate whose simulated p99 response time is <= bound_s (bisection
    over (0, the saturation rate], each rate with the same seed: common random numbers).

    cpu_by_rate: (rate, {service: CPU seconds per request}) measured at given rates (a
    capacity search's steps); the topology at a rate then takes each service's CPU per request
    interpolated at that rate (held flat beyond the points) instead of its own: a stack's CPU
    per request moves with its load (an HTTP client's pool that costs more per request the more
    requests are in flight; an event loop that serves more ready sockets per wake-up)."""
    bound_s = _positive("bound", bound_s)
    points = sorted(((float(r), dict(c)) for r, c in cpu_by_rate if r and r > 0),
                    key=lambda p: p[0])

    def at(rate: float) -> Topology:
        return with_cpu(topo, cpu_at(points, rate)) if points else topo

    sat = max([topo.saturation_rps(), *(at(r).saturation_rps() for r, _ in points)])
    cap = bounded_capacity(lambda r: topology_p99(at(r), r, n, seed, q), bound_s, sat,
                           rel_precision=0.005)
    notes = list(topo.notes)
    if points:
        notes.append(f"CPU per request at each rate from {len(points)} measured rates "
                     f"({points[0][0]:.1f}-{points[-1][0]:.1f} req/s)")
    return Prediction(cap if cap > 0 else None, bound_s * 1000, sat,
                      f"simulation, {n} Poisson requests, seed {seed}",
                      _inputs(at(cap) if cap > 0 else topo), tuple(notes))


def cpu_at(points: Sequence[tuple[float, Mapping[str, float]]], rate: float
           ) -> dict[str, float]:
    """Each service's CPU per request at `rate`, linear between the measured rates (sorted),
    flat beyond them; a service missing at a point is left out of that service's line."""
    out = {}
    for name in sorted({k for _, c in points for k in c}):
        xs = [r for r, c in points if c.get(name) is not None]
        ys = [c[name] for r, c in points if c.get(name) is not None]
        if xs:
            out[name] = float(np.interp(rate, xs, ys))
    return out


def with_cpu(topo: Topology, cpu_s: Mapping[str, float]) -> Topology:
    """The topology with the given services' CPU per request (others as they were)."""
    sets = tuple(CpuSet(cs.cores, {k: cpu_s.get(k, v) for k, v in cs.cpu_s.items()})
                 for cs in topo.cpu)
    return replace(topo, cpu=sets)


def _inputs(topo: Topology) -> dict[str, Any]:
    return {"scoring_slots": topo.scoring_slots, "model_slots": topo.model_slots,
            "calls": topo.calls, "sequential": topo.sequential,
            "sleep_ms": [x * 1000 for x in topo.sleep_s],
            "overhead_ms": topo.overhead_s * 1000,
            "model_overhead_ms": topo.model_overhead_s * 1000,
            "cpu": [{"cores": cs.cores, "cpu_ms": {k: v * 1000 for k, v in cs.cpu_s.items()}}
                    for cs in topo.cpu]}


def topology_from_services(services: Sequence[ServiceInput], *, scoring: str, model: str,
                           calls: int, sequential: bool, sleep_s: tuple[float, float]
                           ) -> Topology:
    """The topology of one rung from the ceiling model's inputs (ceiling.ServiceInput per
    service: slots, mean 1-user hold, CPU per request, CPU set), so the prediction rests on the
    same measurements as the ceiling beside it.

    The scoring handler's mean 1-user latency, less the model calls' and the CPU's share,
    is its fixed overhead; the model API's probed latency, less its sleep's mean and CPU, is
    each call's (0 where the model API was not probed)."""
    by = {s.name: s for s in services}
    if scoring not in by or model not in by:
        raise ValueError(f"services must include {scoring!r} and {model!r}, got "
                         f"{sorted(by)}")
    notes = []
    lo, hi = sleep_s
    cpu = {s.name: s.cpu_s_per_request for s in services}
    for name, v in cpu.items():
        if v is None:
            notes.append(f"no CPU per request measured for {name}: counted as 0")
    cpu = {k: v or 0.0 for k, v in cpu.items()}
    m, s = by[model], by[scoring]
    model_overhead = 0.0
    if m.hold_s is not None:
        model_overhead = max(0.0, m.hold_s - (lo + hi) / 2 - cpu[model] / calls)
    sets = []
    for group in cpu_groups(x.cpus for x in services if x.cpus):
        on = {x.name: cpu[x.name] for x in services if set(x.cpus) & group}
        sets.append(CpuSet(len(group), on))
    unplaced = [x.name for x in services if not x.cpus and cpu[x.name] > 0]
    if unplaced:
        notes.append(f"no CPU set recorded for {', '.join(unplaced)}: their CPU is not queued")
    topo = Topology(s.slots, m.slots, calls, sequential, (lo, hi), tuple(sets), 0.0,
                    model_overhead, scoring, model, next(
                        (x.name for x in services if x.name not in (scoring, model)), "redis"))
    if s.hold_s is None:
        notes.append(f"no 1-user latency for {scoring}: no fixed overhead")
        overhead = 0.0
    else:
        overhead = max(0.0, s.hold_s - topo.path_s())
    return Topology(s.slots, m.slots, calls, sequential, (lo, hi), tuple(sets), overhead,
                    model_overhead, topo.scoring, model, topo.redis, tuple(notes))


def predict_rung(services: Sequence[ServiceInput], arch: str, scoring_env: Mapping[str, Any],
                 model_env: Mapping[str, Any], bound_ms: float | None,
                 cpu_by_rate: Sequence[tuple[float, Mapping[str, float]]] = ()
                 ) -> Prediction | None:
    """A rung's predicted bounded capacity from the ceiling model's inputs for it (the
    services' ServiceInput, named "<role>-<arch>") and its recorded envs, read as the
    services read them: the model calls per request, whether the handler makes them one after
    the other (sync always; async with SCORING_LAB_SEQUENTIAL_MODEL_CALLS), the fake model's
    sleep range. None without a bound (runs before the capacity search). cpu_by_rate: as
    predict takes it."""
    if bound_ms is None:
        return None
    scoring_s = settings_from_env(scoring_env)
    model_s = settings_from_env(model_env)
    topo = topology_from_services(
        services, scoring=f"scoring-{arch}", model=f"model-{arch}",
        calls=scoring_s.model_calls,
        sequential=Arch(arch) is Arch.SYNC or scoring_s.sequential_model_calls,
        sleep_s=(model_s.sleep_min_s, model_s.sleep_max_s))
    return predict(topo, bound_ms / 1000, cpu_by_rate=cpu_by_rate)
