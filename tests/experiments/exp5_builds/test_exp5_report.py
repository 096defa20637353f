"""Experiment 5's report from numbers: the collapse past the knee, the best build per
architecture, the sweep table."""

from __future__ import annotations

import pytest

from experiments.exp5_builds.report import (
    TOP_LEVELS,
    _best_lines,
    _sweep_lines,
    best_builds,
    collapse,
    cpu_seconds_between,
)


def _curve(rps, cpu=None):
    cpu = cpu or [None] * len(rps)
    return [{"users": 10 * (i + 1), "rps": r, "cpu_ms_per_request": c}
            for i, (r, c) in enumerate(zip(rps, cpu, strict=True))]


def test_a_collapse_is_the_top_levels_against_the_peak():
    # httpx-like: up to 130 req/s, then down to ~80 at the top, with CPU per request growing
    c = collapse(_curve([10, 20, 60, 130, 120, 100, 82, 80, 78],
                        [6.0, 6.2, 6.5, 7.0, 9.0, 11.0, 12.0, 12.5, 13.0]))
    assert c["peak_rps"] == 130 and c["peak_users"] == 40
    assert c["top_rps"] == pytest.approx(80) and c["top_users"] == 90
    assert c["drop"] == pytest.approx(1 - 80 / 130)
    assert c["cpu_ms_low"] == pytest.approx(6.1) and c["cpu_ms_top"] == pytest.approx(12.5)
    flat = collapse(_curve([10, 20, 60, 130, 130, 131, 129, 130]))
    assert flat["drop"] == pytest.approx(0, abs=0.01) and flat["cpu_ms_top"] is None
    assert collapse(_curve([10] * TOP_LEVELS)) is None  # too short a ramp to say


def _row(variant, arch, cap, status="found", cpu=5.0, sweep="", max_rps=None, **kw):
    return {"variant": variant, "arch": arch, "capacity_rps": cap, "capacity_status": status,
            "max_rps": max_rps or cap, "stack_cpu_ms_per_request": cpu, "rss_mb": 120.0,
            "sweep": sweep, "predicted_rps": 2 * (cap or 1), "workers": {}, "valid": True,
            "collapse": None, **kw}


def test_the_best_build_is_the_highest_capacity_the_search_stands_behind():
    rows = [_row("default", "sync", 12.0), _row("sync-gthread-32", "sync", 90.0, sweep="t"),
            # invalid searches never win, however high
            _row("sync-gthread-128", "sync", 300.0, status="invalid", sweep="t"),
            _row("default", "async", 190.0), _row("async-aiohttp", "async", 500.0, cpu=1.9),
            # a tie goes to the cheaper build
            _row("async-aiohttp-workers-1", "async", 500.0, cpu=1.6)]
    best = best_builds(rows)
    assert best["sync"]["variant"] == "sync-gthread-32"
    assert best["sync"]["over_default"] == pytest.approx(7.5)
    assert best["async"]["variant"] == "async-aiohttp-workers-1"
    text = "\n".join(_best_lines({"best": best}))
    assert "**sync: `sync-gthread-32`**, capacity 90.0 req/s (found)" in text
    assert "7.50x the default build's capacity" in text
    assert "async/sync = **5.56x**" in text


def test_the_sweep_table_explains_a_fall_past_the_knee():
    fall = collapse(_curve([10, 20, 60, 130, 120, 100, 82, 80, 78],
                           [6.0, 6.2, 6.5, 7.0, 9.0, 11.0, 12.0, 12.5, 13.0]))
    rows = [_row("default", "async", 120.0, collapse=fall),
            _row("async-aiohttp", "async", 500.0, status="unfinished", sweep="async HTTP client",
                 collapse=collapse(_curve([10, 20, 60, 130, 200, 250, 300, 300, 300])))]
    text = "\n".join(_sweep_lines({"rows": rows}))
    assert "| async | (default) | default | 120.0 |" in text
    assert "| async HTTP client | async-aiohttp | 500.0 (unfinished) |" in text
    assert "- default/async: 130.0 req/s at 40 users, 80.0 at 90 (38% less)" in text
    assert "grows from 6.10 to 12.50 ms (2.0x)" in text
    assert "async-aiohttp/async:" not in text  # no fall: not listed


def test_cpu_in_a_window_shorter_than_the_sampling_is_interpolated():
    # 50 % of a core, sampled every second; a process restart in between counts from zero
    def since_start(i):
        return i if i < 5 else i - 5

    samples = [{"t": 100.0 + i, "services": {"scoring-async": {
        "cpu_user_s": 0.4 * since_start(i), "cpu_system_s": 0.1 * since_start(i)}}}
        for i in range(10)]
    sources = {"host": samples}
    assert cpu_seconds_between(sources, "scoring-async", 101.25, 102.75) == pytest.approx(0.75)
    # across the restart (t=105: counters back to 0): the lost second adds nothing
    assert cpu_seconds_between(sources, "scoring-async", 103.0, 107.0) == pytest.approx(1.5)
    assert cpu_seconds_between(sources, "scoring-async", 99.0, 101.0) is None  # not covered
    assert cpu_seconds_between(sources, "model-async", 101.0, 102.0) is None
