"""Experiment 4's decomposition arithmetic on fixture rows (no lab, no Locust)."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.analysis.ceiling import ServiceInput, predict
from experiments.exp4_ladder.report import decompose, surprises


def _row(variant, arch, p50, max_rps, services, cpu_scoring, arrival="spread", knee=True):
    model = predict(services)
    return {"variant": variant, "arch": arch, "arrival": arrival, "p50_1_user_ms": p50,
            "max_rps": max_rps, "predicted_rps": model.predicted_rps,
            "binding": model.binding.name, "model": model.to_dict(),
            "measured_over_predicted": max_rps / model.predicted_rps,
            "cpu_ms_per_request": {f"scoring-{arch}": cpu_scoring}, "low_load_p50_ms": p50,
            "knee": knee, "tested_users": 150}


SYNC = [ServiceInput("scoring-sync", (0,), 2, 0.100, 1, 0.004),
        ServiceInput("model-sync", (0,), 2, 0.046, 2, 0.002)]
ASYNC = [ServiceInput("scoring-async", (0,), None, None, 1, 0.010),
         ServiceInput("model-async", (0,), None, None, 1, 0.0025)]


def _res():
    rows = [
        _row("default", "sync", 100.0, 19.0, SYNC, 4.0),
        _row("default", "async", 55.0, 70.0, ASYNC, 10.0),
        _row("async-sequential", "async", 98.0, 72.0, ASYNC, 9.5),
        _row("original", "async", 150.0, 12.0,
             [ServiceInput("scoring-async", (0,), None, None, 1, 0.080)], 80.0),
        _row("original", "sync", 104.0, 18.0, SYNC, 9.0),
        _row("sync-client-per-request", "sync", 104.0, 23.0, SYNC, 9.0),
    ]
    return {"rows": rows, "loads": {(r["variant"], r["arch"], r["arrival"]): {
        "breaking_point": type("BP", (), {"max_users": 150})()} for r in rows}}


def test_latency_gap_split_into_concurrency_and_the_rest():
    rng = np.random.default_rng(0)
    probe = {("default", "scoring", "async"): rng.normal(55, 2, 40),
             ("async-sequential", "scoring", "async"): rng.normal(98, 2, 40),
             ("default", "scoring", "sync"): rng.normal(100, 2, 40)}
    lat = decompose(_res(), probe)["latency"]
    assert lat["gap_ms"] == pytest.approx(45.0)
    assert lat["concurrency_ms"] == pytest.approx(43.0)
    assert lat["concurrency_share"] == pytest.approx(43 / 45)
    assert lat["rest_ms"] == pytest.approx(2.0)
    assert lat["concurrency_test"]["significant"]


def test_throughput_gap_split_into_blocking_workers_and_cpu_cost():
    thr = decompose(_res(), {})["throughput"]
    assert thr["gap_rps"] == pytest.approx(51.0)
    assert thr["sync_binding"] == "workers:scoring-sync"
    assert thr["async_binding"] == "cpu:0"
    # sync CPU ceiling: 1 core / 6 ms = 166.7 req/s, far above: the whole gap is blocking.
    assert thr["sync_cpu_ceiling_rps"] == pytest.approx(1 / 0.006)
    assert thr["blocking_workers_rps"] == pytest.approx(51.0)
    assert thr["cpu_cost_rps"] == pytest.approx(0.0)
    assert thr["best_sync"]["variant"] == "sync-client-per-request"


def test_original_costs_andsurprises():
    res = _res()
    orig = decompose(res, {})["original"]
    assert orig["async"]["max_rps"] == (12.0, 70.0)
    assert orig["async"]["scoring_cpu_ms_per_request"] == (80.0, 10.0)
    notes = surprises(res)
    assert any("beats pooled keep-alive" in n for n in notes)


def test_capacity_per_rung_beside_its_ceiling_only_where_searched():
    from experiments.exp4_ladder.report import _headline
    from experiments.reporting import capacity_lines

    res = _res()
    assert capacity_lines({**res, "capacity": {}}) == []
    assert "capacity_rps" not in _headline({**res, "capacity": {}})
    step = {"rate": 40.0, "achieved_rate": 39.0, "requests": 200, "errors": 0,
            "p99_response_ms": 120.0, "p99_service_ms": 110.0, "loadgen_cpu_fraction": 0.1,
            "inflight_cap_hits": 0, "outcome": "pass", "reason": "p99 120 ms <= 250 ms"}
    found = {"shared": {"p99_bound_ms": 250.0, "capacity": 40.0, "first_failing": 44.0,
                        "status": "found", "steps": [step]}}
    row = res["rows"][0]  # default/sync, predicted 2 / 0.1 = 20 req/s
    row.update(capacity_rps=40.0, capacity_status="found", first_overloaded_rps=44.0,
               capacity_p99_bound_ms=250.0, capacity_over_predicted=40.0 / row["predicted_rps"],
               bounded_predicted_rps=32.0, capacity_over_bounded=40.0 / 32.0)
    res["capacity"] = {"default": {"sync": found}}
    text = "\n".join(capacity_lines(res))
    assert "| default | sync | 40.0 | found | 44.0 | 20.0 | 200% | 32.0 | 125% | 19.0 |" in text
    assert "<= 250 ms" in text and "| default/sync | 40.0 |" in text
    assert _headline(res)["capacity_rps"] == {"default/sync": 40.0}


def test_capacity_per_rung_over_repeats_shows_median_values_and_cv():
    from experiments.analysis.repeat_figures import summary_of
    from experiments.reporting import capacity_lines

    res = _res()
    found = {"shared": {"p99_bound_ms": 250.0, "capacity": 12.0, "first_failing": 13.0,
                        "status": "found", "steps": []}}
    spread = summary_of([12.0, 22.0])  # issue 13: default/sync, two runs apart
    row = res["rows"][0]
    row.update(capacity_rps=spread["median"], capacity_status="found",
               first_overloaded_rps=13.0, capacity_p99_bound_ms=250.0,
               capacity_over_predicted=spread["median"] / row["predicted_rps"],
               capacity_repeats=spread)
    res["capacity"] = {"default": {"sync": found}}
    text = "\n".join(capacity_lines(res))
    assert "| default | sync | 17.0 (12.0/22.0, CV 42% **unstable**) | found |" in text
    assert "median over the repeats" in text


def test_bounded_prediction_sits_beside_the_ceiling_from_its_inputs():
    from experiments.analysis.ceiling import ServiceInput
    from experiments.analysis.ladder import _bounded

    services = [ServiceInput("scoring-sync", (0,), 2, 0.096, 1, 0.002, 2),
                ServiceInput("model-sync", (0,), 2, 0.047, 2, 0.001, 2),
                ServiceInput("redis", (0,), None, None, 1, 0.0001, 1)]
    out = _bounded((services, {}, {}), "sync", 10.0, 250.0, [])
    # two blocking scoring slots held ~96 ms: about M/D/2's 10.6 req/s at a 250 ms p99
    assert 9.0 < out["bounded_predicted_rps"] < 12.0
    assert out["capacity_over_bounded"] == pytest.approx(10.0 / out["bounded_predicted_rps"])
    assert out["bounded_prediction"]["inputs"]["scoring_slots"] == 2
    assert _bounded((services, {}, {}), "sync", 10.0, None, []) == {}
