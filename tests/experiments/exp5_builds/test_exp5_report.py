"""Experiment 5's report from numbers: the collapse past the knee, the best build per
architecture, the sweep table."""

from __future__ import annotations

import pytest

from experiments.exp5_builds.report import (
    TOP_LEVELS,
    WINDOW_REQUESTS,
    _best_lines,
    _headline,
    _parser_lines,
    _sweep_lines,
    _where_cpu_goes,
    best_builds,
    collapse,
    parser_pairs,
)


def _curve(rps, scoring=None, model=None, seconds=2.0):
    """Levels of 10, 20, ... users lasting `seconds`, with each stack service's CPU seconds
    from the given CPU ms per request (redis a flat 0.1)."""
    out = []
    for i, r in enumerate(rps):
        done = r * seconds
        ms = {"scoring-async": (scoring or [None] * len(rps))[i],
              "model-async": (model or [1.0] * len(rps))[i], "redis": 0.1}
        out.append({"users": 10 * (i + 1), "rps": r, "requests": done,
                    "errors": 0.0, "seconds": seconds,
                    "cpu_s": {k: None if v is None else v * done / 1000 for k, v in ms.items()},
                    "cpu_ms_per_request": ms["scoring-async"]})
    return out


def test_a_collapse_is_the_top_levels_against_the_peak():
    # httpx-like: up to 130 req/s, then down to ~80 at the top, with CPU per request growing
    c = collapse(_curve([10, 20, 60, 130, 120, 100, 82, 80, 78],
                        [6.0, 6.0, 6.5, 7.0, 9.0, 11.0, 12.0, 12.5, 13.0]))
    assert c["peak_rps"] == 130 and c["peak_users"] == 40
    assert c["top_rps"] == pytest.approx(80) and c["top_users"] == 90
    assert c["drop"] == pytest.approx(1 - 80 / 130)
    # the low window pools the first levels up to WINDOW_REQUESTS requests (20 + 40 + 120 +
    # 260: the first four), weighted by requests, not a mean of per-level ratios
    low, top = c["cpu_low"], c["cpu_top"]
    assert WINDOW_REQUESTS == 200 and low["users"] == (10, 40) and low["requests"] == 440
    assert low["ms_per_request"]["scoring-async"] == pytest.approx(
        (20 * 6 + 40 * 6 + 120 * 6.5 + 260 * 7) / 440)
    assert top["users"] == (70, 90)
    assert top["ms_per_request"]["scoring-async"] == pytest.approx(
        (164 * 12 + 160 * 12.5 + 156 * 13) / 480)
    assert top["stack_ms_per_request"] == pytest.approx(
        top["ms_per_request"]["scoring-async"] + 1.0 + 0.1)
    flat = collapse(_curve([10, 20, 60, 130, 130, 131, 129, 130]))
    assert flat["drop"] == pytest.approx(0, abs=0.01)
    assert flat["cpu_top"]["stack_ms_per_request"] is None  # no samples for the handler
    assert collapse(_curve([10] * TOP_LEVELS)) is None  # too short a ramp to say
    # a ramp too light for WINDOW_REQUESTS before its top: no low window rather than a
    # figure from a couple of requests (10 ms counter ticks made one read 0.06 ms)
    assert collapse(_curve([1, 2, 3, 4, 5], [5.0] * 5))["cpu_low"] is None


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
                           [6.0, 6.0, 6.5, 7.0, 9.0, 11.0, 12.0, 12.5, 13.0]))
    # a fall with the CPU per request flat, and one where it went to the model API
    flat = collapse(_curve([10, 20, 60, 130, 120, 100, 82, 80, 78], [5.0] * 9))
    model = collapse(_curve([10, 20, 60, 130, 120, 100, 82, 80, 78], [5.0] * 9,
                            [1.0] * 6 + [4.0] * 3))
    rows = [_row("default", "async", 120.0, collapse=fall),
            _row("flat", "async", 120.0, collapse=flat),
            _row("model", "async", 120.0, collapse=model),
            _row("async-aiohttp", "async", 500.0, status="unfinished", sweep="async HTTP client",
                 collapse=collapse(_curve([10, 20, 60, 130, 200, 250, 300, 300, 300])))]
    text = "\n".join(_sweep_lines({"rows": rows}))
    assert "| async | (default) | default | 120.0 |" in text
    assert "| async HTTP client | async-aiohttp | 500.0 (unfinished) |" in text
    low = (20 * 6 + 40 * 6 + 120 * 6.5 + 260 * 7) / 440 + 1.1
    top = (164 * 12 + 160 * 12.5 + 156 * 13) / 480 + 1.1
    line = next(x for x in text.splitlines() if x.startswith("- default/async:"))
    assert line.startswith("- default/async: 130.0 req/s at 40 users, 80.0 at 90 (38% less)")
    assert f"is {low:.2f} ms at 10-40 users and {top:.2f} ms at the top ({top / low:.2f}x" in line
    assert "in scoring-async): the same core does more work per answer" in line
    assert f"at the top the stack keeps {80 * top / 1000:.2f} of a core busy." in line
    # errors are answers too: they count in the CPU per request and are said
    errors = _curve([10, 20, 60, 130, 120, 100, 82, 80, 78], [5.0] * 9)
    for p in errors[-TOP_LEVELS:]:
        p["errors"] = p["requests"] / 4
    c = collapse(errors)
    assert c["cpu_top"]["error_fraction"] == pytest.approx(0.25)
    assert "and 25% of its answers are errors" in _where_cpu_goes(c)
    flat_line = next(x for x in text.splitlines() if x.startswith("- flat/async:"))
    assert "about the same, so the fall is not more CPU per answer" in flat_line
    assert "grows" not in flat_line and "more work" not in flat_line
    model_line = next(x for x in text.splitlines() if x.startswith("- model/async:"))
    assert "+3.00 ms in model-async): the same core does more work" in model_line
    assert "async-aiohttp/async:" not in text  # no fall: not listed


def test_each_hiredis_point_is_paired_with_its_python_twin_of_the_same_run():
    def variant(name, env, workers=None):
        deploy = {"scoring_handler_env": env}
        if workers:
            deploy["scoring_handler_workers"] = workers
        return name, {"name": name, "deploy_vars": deploy}

    variants = dict([
        variant("async-aiohttp", {"SCORING_LAB_HTTP_CLIENT": "aiohttp"}),
        variant("async-aiohttp-hiredis", {"SCORING_LAB_HTTP_CLIENT": "aiohttp",
                                          "SCORING_LAB_REDIS_PARSER": "hiredis"}),
        variant("async-aiohttp-workers-1", {"SCORING_LAB_HTTP_CLIENT": "aiohttp"}, 1),
        variant("async-aiohttp-workers-1-hiredis", {"SCORING_LAB_HTTP_CLIENT": "aiohttp",
                                                    "SCORING_LAB_REDIS_PARSER": "hiredis"}, 1),
        # no twin in this run: not paired with a build that differs in more than the parser
        variant("default-hiredis", {"SCORING_LAB_REDIS_PARSER": "hiredis"}, 3),
    ])

    def cpu(scoring):
        return {"cpu_ms_per_request": {"scoring-async": scoring}}

    # a later repeat's deploy carries its restart token: still twins
    variants["async-aiohttp-hiredis"]["deploy_vars"]["model_api_env"] = {
        "SCORING_LAB_RESTART_TOKEN": "run-r2-async-aiohttp-hiredis"}
    rows = [_row("async-aiohttp", "async", 400.0, cpu=2.0, **cpu(1.2),
                 capacity_per_repeat=[400.0, 410.0, 300.0]),
            _row("async-aiohttp-hiredis", "async", 440.0, cpu=1.8, **cpu(1.0),
                 capacity_per_repeat=[440.0, 410.0, None]),
            _row("async-aiohttp-workers-1", "async", 500.0, status="unfinished", **cpu(1.1)),
            _row("async-aiohttp-workers-1-hiredis", "async", 450.0, **cpu(0.9)),
            _row("default-hiredis", "async", 100.0, **cpu(3.0))]
    pairs = parser_pairs(rows, variants)
    assert [(p["python"]["variant"], p["hiredis"]["variant"]) for p in pairs] == [
        ("async-aiohttp", "async-aiohttp-hiredis"),
        ("async-aiohttp-workers-1", "async-aiohttp-workers-1-hiredis")]
    assert pairs[0]["capacity_ratio"] == pytest.approx(1.1)
    assert pairs[0]["capacity_ratio_repeats"][:2] == pytest.approx([1.1, 1.0])
    assert pairs[0]["capacity_ratio_repeats"][2] is None
    assert pairs[1]["capacity_ratio"] == pytest.approx(0.9)
    text = "\n".join(_parser_lines({"parser_pairs": pairs}))
    assert "| async | async-aiohttp -> async-aiohttp-hiredis | 400.0 -> 440.0 | per repeat " \
           "1.10, 1.00, - (of the medians 1.10x) | 1.20 -> 1.00 | 2.00 -> 1.80 |" in text
    # the headline says what the verdicts weigh: the paired ratios, or the one ratio
    head = _headline({"best": {}, "rows": [], "parser_pairs": pairs})["hiredis_over_python"]
    assert head == {"async-aiohttp-hiredis/async": [1.1, 1.0, None],
                    "async-aiohttp-workers-1-hiredis/async": [0.9]}
    assert "500.0 (unfinished) -> 450.0 | 0.90x |" in text
    assert ("- `async-aiohttp-hiredis`: the scoring handler's CPU per request -0.20 ms (-17%); "
            "capacity ratios 1.00-1.10 over the repeats, either side of 1") in text
    assert "capacity ratio 0.90 from one search each: no spread" in text
    pairs[0]["capacity_ratio_repeats"] = [None, 1.05]
    assert ("capacity ratio 1.05 in the one repeat where both searches found a capacity"
            in "\n".join(_parser_lines({"parser_pairs": pairs})))
    assert _parser_lines({"parser_pairs": []}) == []
