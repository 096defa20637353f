"""The queueing prediction (experiments/analysis/queueing.py) against closed forms: M/D/1's
Pollaczek-Khinchine mean and Erlang's exact waiting-time law, M/M/c's Erlang C tail, and an
M/D/2 case worked out here independently."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments.analysis import queueing as q
from experiments.analysis.ceiling import ServiceInput


def md1_wait_cdf(x: float, lam: float, d: float) -> float:
    """Erlang's M/D/1 waiting-time law: P(W <= x) = (1 - rho) sum_{k=0}^{floor(x/D)}
    (lam (k D - x))^k / k! e^{-lam (k D - x)}."""
    rho = lam * d
    return (1 - rho) * sum((lam * (k * d - x)) ** k / math.factorial(k)
                           * math.exp(-lam * (k * d - x)) for k in range(int(x // d) + 1))


def erlang_c(c: int, a: float) -> float:
    """Probability that an M/M/c arrival waits (a = lam / mu offered load)."""
    top = a ** c / math.factorial(c) * c / (c - a)
    return top / (sum(a ** k / math.factorial(k) for k in range(c)) + top)


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9])
def test_md1_mean_wait_is_pollaczek_khinchine(rho):
    d = 0.1
    lam = rho / d
    pmf = q.md_c_queue_pmf(lam, 1, d)
    mean_queue = float(np.sum(np.arange(len(pmf)) * pmf))
    # Little: E[Wq] = E[Q] / lam; P-K for deterministic service: rho D / (2 (1 - rho))
    assert mean_queue / lam == pytest.approx(rho * d / (2 * (1 - rho)), rel=1e-6)


@pytest.mark.parametrize("rho", [0.4, 0.8])
@pytest.mark.parametrize("x_over_d", [0.0, 0.3, 1.0, 1.7, 3.2])
def test_md1_wait_law_is_erlangs(rho, x_over_d):
    d = 0.096
    lam = rho / d
    assert q.md_c_wait_cdf(x_over_d * d, lam, 1, d) == pytest.approx(
        md1_wait_cdf(x_over_d * d, lam, d), abs=1e-9)


def test_md1_p99_solves_erlangs_law():
    d, lam = 0.096, 5.0
    p99 = q.md_c_response_quantile(lam, 1, d)
    assert md1_wait_cdf(p99 - d, lam, d) == pytest.approx(0.99, abs=1e-6)


@pytest.mark.parametrize(("c", "rho"), [(2, 0.55), (3, 0.8)])
def test_md_c_quantile_agrees_with_simulation(c, rho):
    d = 0.096
    lam = rho * c / d
    exact = q.md_c_response_quantile(lam, c, d)
    sim = q.mgc_response_quantile(lam, c, lambda rng, n: np.full(n, d), n=300_000, seed=3)
    assert sim == pytest.approx(exact, rel=0.03)


@pytest.mark.parametrize(("c", "lam", "t"), [(1, 7.0, 0.2), (2, 15.0, 0.1), (4, 30.0, 0.05)])
def test_mmc_wait_tail_is_erlang_c(c, lam, t):
    mu = 10.0
    rng = np.random.default_rng(7)
    n = 300_000
    arrivals = np.cumsum(rng.exponential(1 / lam, n))
    service = rng.exponential(1 / mu, n)
    waits = (q.fcfs_starts(arrivals, service, c) - arrivals)[n // 20:]
    expected = erlang_c(c, lam / mu) * math.exp(-(c * mu - lam) * t)
    assert float(np.mean(waits > t)) == pytest.approx(expected, rel=0.06)


def test_md2_bounded_capacity_of_the_issue():
    """M/D/2, D = 96 ms, p99 <= 250 ms: about 11 req/s (the issue's default/sync case).
    Independent bracket: M/M/2 with the same mean service (more variable, so it waits
    longer) holds less; its p99 response is the quantile of wait + Exp(mu), worked out here
    from Erlang C; and 2/D (utilisation 1) is an upper bound."""
    d, bound = 0.096, 0.25
    cap = q.md_c_bounded_capacity(2, d, bound)
    assert 10.0 < cap < 11.5
    assert q.md_c_response_quantile(cap, 2, d) <= bound + 1e-9
    assert q.md_c_response_quantile(cap * 1.01, 2, d) > bound

    mu = 1 / d

    def mm2_p99(lam):
        # P(R > x) = P(wait 0) e^{-mu x} + C * (waiting part convolved with Exp(mu))
        c_wait, theta = erlang_c(2, lam / mu), 2 * mu - lam
        def tail(x):
            conv = (theta * math.exp(-mu * x) - mu * math.exp(-theta * x)) / (theta - mu)
            return (1 - c_wait) * math.exp(-mu * x) + c_wait * conv
        lo, hi = 0.0, 10.0
        for _ in range(80):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if tail(mid) > 0.01 else (lo, mid)
        return hi

    mm2_cap = q.bounded_capacity(mm2_p99, bound, 2 / d * 0.999)
    assert mm2_cap < cap < 2 / d
    # and a seeded simulation of M/D/2 puts the p99 at that rate on the bound
    sim = q.mgc_response_quantile(cap, 2, lambda rng, n: np.full(n, d), n=400_000, seed=11)
    assert sim == pytest.approx(bound, rel=0.03)


def test_md_c_quantile_grows_with_rate_and_falls_with_servers():
    d = 0.05
    rates = [5, 10, 15, 20, 25, 30, 35]
    p99 = [q.md_c_response_quantile(r, 2, d) for r in rates]
    assert all(b >= a for a, b in zip(p99, p99[1:], strict=False))
    assert p99[-1] > p99[0]
    assert q.md_c_response_quantile(30, 3, d) < q.md_c_response_quantile(30, 2, d)
    assert (q.md_c_bounded_capacity(1, d, 0.2) < q.md_c_bounded_capacity(2, d, 0.2)
            < q.md_c_bounded_capacity(4, d, 0.2))
    assert q.md_c_bounded_capacity(2, d, 0.1) < q.md_c_bounded_capacity(2, d, 0.2)


def _sync_md2(slots=2, cpu=0.0):
    # two sequential calls of exactly 48 ms, nothing else: M/D/slots with D = 96 ms
    return q.Topology(slots, None, 2, True, (0.048, 0.048),
                      (q.CpuSet(1, {"scoring": cpu}),) if cpu else ())


def test_topology_reduces_to_md_c():
    topo = _sync_md2()
    assert topo.path_s() == pytest.approx(0.096)
    assert topo.saturation_rps() == pytest.approx(2 / 0.096)
    exact = q.md_c_response_quantile(9.0, 2, 0.096)
    assert q.topology_p99(topo, 9.0, n=100_000) == pytest.approx(exact, rel=0.04)
    pred = q.predict(topo, 0.25, n=100_000)
    assert pred.capacity_rps == pytest.approx(q.md_c_bounded_capacity(2, 0.096, 0.25),
                                              rel=0.04)


def test_event_loop_topology_is_bound_by_cpu():
    # an event loop: no slots; 3 ms of CPU per request on one core saturates at 333 req/s
    topo = q.Topology(None, None, 2, False, (0.040, 0.050),
                      (q.CpuSet(1, {"scoring": 0.0025, "model": 0.0005}),))
    assert topo.saturation_rps() == pytest.approx(1 / 0.003)
    p99 = [q.topology_p99(topo, r) for r in (50, 150, 250, 300, 320)]
    assert all(b >= a for a, b in zip(p99, p99[1:], strict=False))
    assert p99[0] < 0.06  # at low load: the slower of two 40-50 ms calls plus CPU
    cap = q.predict(topo, 0.25).capacity_rps
    assert 0.8 / 0.003 < cap < 1 / 0.003
    cheaper = q.Topology(None, None, 2, False, (0.040, 0.050),
                         (q.CpuSet(1, {"scoring": 0.0015, "model": 0.0005}),))
    assert q.predict(cheaper, 0.25).capacity_rps > cap


def test_capacity_grows_with_slots():
    caps = [q.predict(_sync_md2(s), 0.25).capacity_rps for s in (1, 2, 4)]
    assert caps[0] < caps[1] < caps[2]


def test_model_slots_fewer_than_callers_queue_the_calls():
    free = q.Topology(4, 4, 2, True, (0.045, 0.045), ())
    shared = q.Topology(4, 2, 2, True, (0.045, 0.045), ())
    assert q.topology_p99(shared, 15.0) > q.topology_p99(free, 15.0)
    assert shared.saturation_rps() == pytest.approx(2 / 0.09)


def test_topology_from_the_ceiling_inputs():
    services = [
        ServiceInput("scoring-sync", (0,), 2, 0.0990, 1, 0.0020, 2),
        ServiceInput("model-sync", (0,), 2, 0.0470, 2, 0.0010, 2),
        ServiceInput("redis", (0,), None, None, 1, 0.0001, 1),
    ]
    topo = q.topology_from_services(services, scoring="scoring-sync", model="model-sync",
                                    calls=2, sequential=True, sleep_s=(0.040, 0.050))
    assert topo.scoring_slots == 2 and topo.model_slots == 2
    assert topo.model_overhead_s == pytest.approx(0.047 - 0.045 - 0.0005)
    assert [cs.cores for cs in topo.cpu] == [1]
    # the no-load path is the measured 1-user latency: 2 x 47 ms calls + 2.1 ms CPU + 2.9 ms
    assert topo.overhead_s == pytest.approx(0.0029)
    assert topo.path_s() == pytest.approx(0.099)
    with pytest.raises(ValueError, match="model-async"):
        q.topology_from_services(services, scoring="scoring-sync", model="model-async",
                                 calls=2, sequential=True, sleep_s=(0.04, 0.05))


@pytest.mark.parametrize(("call", "needle"), [
    (lambda: q.md_c_queue_pmf(-1.0, 2, 0.1), "-1.0"),
    (lambda: q.md_c_queue_pmf(30.0, 2, 0.1), "utilisation"),
    (lambda: q.md_c_queue_pmf(5.0, 0, 0.1), "servers"),
    (lambda: q.md_c_response_quantile(5.0, 2, 0.1, q=1.5), "1.5"),
    (lambda: q.bounded_capacity(lambda r: 0.0, 0.0, 10.0), "bound"),
    (lambda: q.topology_p99(_sync_md2(), float("nan")), "nan"),
    (lambda: q.Topology(0, None, 2, True, (0.04, 0.05), ()), "scoring_slots"),
    (lambda: q.Topology(2, None, 2, True, (0.05, 0.04), ()), "sleep_s"),
    (lambda: q.Topology(2, None, 2, True, (0.04, 0.05), (q.CpuSet(1, {"x": -1.0}),)), "x"),
    (lambda: q.Topology(None, None, 2, True, (0.04, 0.05), ()).saturation_rps(), "no stage"),
])
def test_bad_input_names_the_value(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()


def test_cpu_at_interpolates_and_holds_flat():
    points = [(100.0, {"a": 0.002, "b": 0.001}), (300.0, {"a": 0.004})]
    assert q.cpu_at(points, 200.0) == pytest.approx({"a": 0.003, "b": 0.001})
    assert q.cpu_at(points, 50.0)["a"] == pytest.approx(0.002)
    assert q.cpu_at(points, 900.0)["a"] == pytest.approx(0.004)


def test_cpu_that_grows_with_rate_lowers_the_prediction():
    topo = q.Topology(None, None, 2, False, (0.040, 0.050),
                      (q.CpuSet(1, {"scoring": 0.002, "model": 0.001}),))
    flat = q.predict(topo, 0.25).capacity_rps
    # measured: the same cost at 100 req/s, 60 % more per request at 300 req/s
    growing = q.predict(topo, 0.25, cpu_by_rate=[(100.0, {"scoring": 0.002}),
                                                 (300.0, {"scoring": 0.0036})])
    assert growing.capacity_rps < flat
    # at the rate it predicts, the interpolated cost is what the simulation used
    used = growing.inputs["cpu"][0]["cpu_ms"]["scoring"] / 1000
    assert used == pytest.approx(0.002 + 0.0016 * (growing.capacity_rps - 100) / 200, rel=1e-6)
    assert 1 / (used + 0.001) > growing.capacity_rps
