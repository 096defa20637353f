"""Experiment 5's three-way split (issue 26): which pairs of builds differ in one factor, the
pairs' paired ratios and ranges, undecided pairs, the model floors, the report section, and the
`servers` profile's pairs checked at load."""

from __future__ import annotations

import math
import tomllib

import pytest

from experiments.analysis.factors import (
    PairError,
    analyse_pair,
    build_of,
    check_pair,
    floor_of,
    model_floor_ms,
    overhead,
    waterfall,
)
from experiments.config import ConfigError
from experiments.exp5_builds import EXPERIMENT
from experiments.exp5_builds.factors_report import (
    _refused,
    analyse_factors,
    factor_lines,
    headline,
    plot_waterfall,
)
from experiments.exp5_builds.run import check_sweeps
from experiments.ladder import parse_ladder

CONFIG = EXPERIMENT.config


def _build(name, arch, scoring=None, model=None, workers=None):
    return build_of(name, arch, {"scoring_handler": scoring or {}, "model_api": model or {}},
                    {"scoring_handler": workers})


GRANIAN = {"SCORING_LAB_SERVER": "granian"}


def test_a_pair_is_one_factor_and_a_pair_of_two_is_refused():
    gthread = {"SCORING_LAB_SYNC_WORKER": "gthread", "SCORING_LAB_GTHREAD_THREADS": "32"}
    granian = {**GRANIAN, "SCORING_LAB_GRANIAN_BLOCKING_THREADS": "32"}
    a = _build("gthread", "sync", gthread, gthread)
    b = _build("granian", "sync", granian, granian)
    # the server with its own knobs: gthread's worker and threads mean nothing on granian
    assert "scoring_handler.server" in check_pair("server", a, b)
    aio = {"SCORING_LAB_HTTP_CLIENT": "aiohttp"}
    x, y = _build("httpx", "async", workers=1), _build("aio", "async", aio, workers=1)
    assert check_pair("http client", x, y) == ["scoring_handler.http_client"]
    # two settings changed where one factor is declared: refused, both named
    z = _build("aio-granian", "async", {**aio, **GRANIAN}, workers=1)
    with pytest.raises(PairError, match=r"pair 'http client' \(httpx vs aio-granian\): differ "
                                        r"in scoring_handler.server beyond"):
        check_pair("http client", x, z)
    # workers per core are the concurrency model's, not the client's
    with pytest.raises(PairError, match="scoring_handler.workers"):
        check_pair("http client", _build("d", "async"), y)
    assert check_pair("concurrency model", _build("d", "async"), x) == [
        "scoring_handler.workers"]
    with pytest.raises(PairError, match="the same"):
        check_pair("server", x, _build("again", "async", workers=1))
    with pytest.raises(PairError, match="unknown factor 'colour'"):
        check_pair("colour", x, y)
    with pytest.raises(PairError, match="only a 'framework' pair"):
        check_pair("server", a, y)


def test_the_framework_pair_differs_in_the_architecture_alone():
    threads = {**GRANIAN, "SCORING_LAB_GRANIAN_BLOCKING_THREADS": "32"}
    sync = _build("s", "sync", threads, threads)
    aio = _build("a", "async", {**GRANIAN, "SCORING_LAB_HTTP_CLIENT": "aiohttp"}, GRANIAN, 1)
    # threads, client and workers are each architecture's own: part of the factor
    assert check_pair("framework", sync, aio) == ["arch sync -> async"]
    # a setting both architectures read must match
    calls = _build("c", "async", {**GRANIAN, "SCORING_LAB_MODEL_CALLS": "3"}, GRANIAN)
    with pytest.raises(PairError, match="scoring_handler.model_calls as well as the framework"):
        check_pair("framework", sync, calls)
    # the model API on another server is a second factor
    with pytest.raises(PairError, match="model_api.server"):
        check_pair("framework", sync, _build("m", "async", GRANIAN))
    # `default` is gunicorn for sync and uvicorn for async: two servers under one name
    with pytest.raises(PairError, match="the server changes with the framework"):
        check_pair("framework", _build("ds", "sync"), _build("da", "async"))
    with pytest.raises(PairError, match="both are sync"):
        check_pair("framework", sync, sync)


def test_the_model_floors_follow_from_the_settings():
    assert model_floor_ms(2, True, 0.040, 0.050) == pytest.approx(90.0)
    assert model_floor_ms(2, False, 0.040, 0.050) == pytest.approx(40 + 10 * math.sqrt(0.5))
    assert model_floor_ms(1, False, 0.040, 0.050) == pytest.approx(45.0)
    assert model_floor_ms(3, False, 0.0, 0.030) == pytest.approx(30 * 0.5 ** (1 / 3))
    with pytest.raises(ValueError, match="sleep_min_s <= sleep_max_s"):
        model_floor_ms(2, True, 0.05, 0.04)
    assert floor_of(_build("s", "sync")) == pytest.approx(90.0)
    assert floor_of(_build("a", "async")) == pytest.approx(47.071, abs=1e-3)
    seq = _build("q", "async", {"SCORING_LAB_SEQUENTIAL_MODEL_CALLS": "true"})
    assert floor_of(seq) == pytest.approx(90.0)
    wide = _build("w", "async", model={"SCORING_LAB_SLEEP_MIN_S": "0.01",
                                       "SCORING_LAB_SLEEP_MAX_S": "0.03"})
    assert floor_of(wide) == pytest.approx(10 + 20 * math.sqrt(0.5))
    o = overhead(_build("a", "async"), 51.0)
    assert o["overhead_ms"] == pytest.approx(51.0 - 47.0711, abs=1e-3)
    assert overhead(_build("a", "async"), None)["overhead_ms"] is None


def _side(build, caps, statuses=None, cpu=None):
    return {"build": build, "capacity": caps, "statuses": statuses or ["found"] * len(caps),
            "cpu_ms": cpu or [None] * len(caps)}


def test_a_pair_pairs_each_repeat_and_calls_its_spread_a_range():
    p = analyse_pair("server", _side("a/sync", [300.0, 280.0, 310.0], cpu=[3.0, 3.2, 2.9]),
                     _side("b/sync", [450.0, 392.0, 341.0], cpu=[2.0, 2.1, 2.2]))
    assert p["decided"] and p["ratios"] == pytest.approx([1.5, 1.4, 1.1])
    # the median of the per-repeat ratios, not the ratio of the medians (392 / 300)
    assert p["ratio"]["median"] == pytest.approx(1.4)
    assert (p["ratio"]["low"], p["ratio"]["high"]) == pytest.approx((1.1, 1.5))
    assert p["ratio"]["kind"] == "range" and p["ratio"]["n"] == 3
    assert p["cpu_ms_diff"]["median"] == pytest.approx(-1.0)
    assert (p["cpu_ms_diff"]["low"], p["cpu_ms_diff"]["high"]) == pytest.approx((-1.1, -0.7))
    text = "\n".join(factor_lines({"pairs": [p], "overheads": [], "paths": []}))
    assert "| 1.40x (range 1.10 to 1.50, 3 repeats) |" in text
    assert "interval" not in text.replace("not a confidence interval", "")
    with pytest.raises(ValueError, match="different lengths"):
        analyse_pair("server", _side("a", [1.0, 2.0]), _side("b", [1.0]))


def test_a_pair_with_a_bound_on_either_side_attributes_nothing():
    p = analyse_pair("http client", _side("a/async", [300.0, 310.0], cpu=[3.0, 3.1]),
                     _side("b/async", [600.0, 640.0], ["found", "unfinished"], [2.0, 2.1]))
    assert not p["decided"] and p["ratio"] is None and p["ratios"] == []
    assert p["cpu_ms_diff"] is None  # nothing attributed, the CPU difference included
    assert p["undecided"] == "undecided: b/async is a lower bound in repeat 2"
    # each side keeps one status word, as every search does: found only when all closed
    assert (p["a"]["status"], p["b"]["status"]) == ("found", "unfinished")
    assert p["b"]["statuses"] == ["found", "unfinished"]
    q = analyse_pair("server", _side("a/sync", [None], ["unfinished"]),
                     _side("b/sync", [10.0], ["below_range"]))
    assert q["undecided"] == ("undecided: a/sync has no capacity (unfinished); b/sync is an "
                              "upper bound")
    text = "\n".join(factor_lines({"pairs": [p, q], "overheads": [], "paths": []}))
    assert "| 600.0, >= 640.0 (unfinished) | undecided: b/async is a lower bound in " \
           "repeat 2 |" in text
    assert "no capacity (unfinished)" in text
    assert headline({"pairs": [p]}) == {
        "http client: a/async -> b/async": "undecided: b/async is a lower bound in repeat 2"}


def test_the_section_renders_overheads_and_a_waterfall(tmp_path):
    pairs = [analyse_pair("concurrency model", _side("d/sync", [10.0, 12.0]),
                          _side("g/sync", [290.0, 300.0])),
             analyse_pair("server", _side("g/sync", [290.0, 300.0]),
                          _side("r/sync", [435.0, 420.0])),
             analyse_pair("framework", _side("a/async", [800.0, 900.0]),
                          _side("r/sync", [400.0, 450.0], ["found", "above_range"]))]
    steps = waterfall(["d/sync", "g/sync", "r/sync"], pairs)
    assert [s["factor"] for s in steps] == ["concurrency model", "server"]
    assert steps[0]["ratio"] == pytest.approx((29 + 25) / 2)
    assert steps[1]["cumulative"] == pytest.approx(27 * 1.45)
    # walked backwards, a pair's ratio is inverted; an undecided step stops the total
    back = waterfall(["r/sync", "a/async"], pairs)
    assert back[0]["ratio"] is None and back[0]["cumulative"] is None
    fa = {"pairs": pairs, "paths": [{"builds": ["d/sync", "g/sync", "r/sync"], "steps": steps},
                                    {"builds": ["r/sync", "a/async"], "steps": back}],
          "overheads": [overhead(_build("d/sync", "sync"), 95.6),
                        overhead(_build("a/async", "async"), None)]}
    plot = plot_waterfall(tmp_path, fa)
    assert plot == "plot_factors.png" and (tmp_path / plot).stat().st_size > 0
    text = "\n".join(factor_lines(fa, plot))
    assert text.startswith("## Where the gap comes from")
    assert "| d/sync | 90.00 | 95.60 | 5.60 |" in text
    assert "| a/async | 47.07 | n/a | n/a |" in text
    assert ("- d/sync -> g/sync -> r/sync: concurrency model 27.00x, server 1.45x; in all "
            "39.15x.") in text
    assert "- r/sync -> a/async: framework undecided; no total: a step is undecided." in text
    assert "![capacity ratios factor by factor](plot_factors.png)" in text
    assert factor_lines(None) == [] and plot_waterfall(tmp_path, None) is None


def test_the_servers_profile_runs_every_pair_and_path_and_each_verifies():
    servers = EXPERIMENT.configure("servers")  # the load checks every pair
    assert servers.protocol.repeats >= 3
    trust = EXPERIMENT.configure("trust")
    assert servers.protocol.capacity == trust.protocol.capacity
    assert {p.factor for p in servers.pairs} >= {"server", "framework", "http client",
                                                 "concurrency model"}
    with CONFIG.open("rb") as f:
        data = tomllib.load(f)
    assert len(servers.pairs) == len(data["pairs"]) and len(servers.paths) == len(data["paths"])
    names = {v.name for v in servers.variants}
    assert {"sync-gthread-32", "sync-granian-32", "async-aiohttp-workers-1",
            "async-granian-aiohttp-workers-1", "async-workers-1"} <= names
    # the manifest carries them; a profile without them carries none (earlier runs' shape)
    assert len(servers.to_dict()["pairs"]) == len(data["pairs"])
    assert "pairs" not in EXPERIMENT.configure("smoke").to_dict()


@pytest.mark.parametrize("mutate, message", [
    # the async server pair's b given a second change: refused at load, the pair named
    (lambda d: next(v for v in d["variants"] if v["name"] == "async-granian-aiohttp-workers-1")
     ["scoring_handler_env"].update(SCORING_LAB_HTTP_CLIENT="httpx"),
     r"pair 'server' \(async-aiohttp-workers-1/async vs async-granian-aiohttp-workers-1/async"
     r"\): differ in scoring_handler.http_client beyond the factor 'server'"),
    # a setting both architectures read, on one side of the framework pair
    (lambda d: next(v for v in d["variants"] if v["name"] == "async-granian-aiohttp-workers-1")
     ["model_api_env"].update(SCORING_LAB_SLEEP_MAX_S="0.06"),
     r"pair 'framework' .*: differ in model_api.sleep_max_s as well as the framework"),
    (lambda d: d["pairs"][0].update(b="sync-gthread-9/sync"), "'sync-gthread-9/sync': no such"),
    (lambda d: d["pairs"][0].update(b="sync-gthread-32/async"), "no such build"),
    (lambda d: d["paths"][0].update(builds=["default/sync", "sync-granian-32/sync"]),
     "no pair declares default/sync -> sync-granian-32/sync"),
    (lambda d: d["pairs"][1].update(factor="http client"), "beyond the factor 'http client'"),
])
def test_a_pair_that_is_not_one_factor_is_a_config_error(mutate, message):
    with CONFIG.open("rb") as f:
        data = tomllib.load(f)
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        check_sweeps(parse_ladder(data, "full", source=str(CONFIG)))


def test_the_report_refuses_a_recorded_pair_that_is_not_one_factor():
    def rung(name, env, per_core=None):
        return {"name": name, "scoring_handler_env": env, "model_api_env": {},
                "scoring_handler_workers_per_core": per_core}

    aio = {"SCORING_LAB_HTTP_CLIENT": "aiohttp"}
    variants = {v["name"]: v for v in (
        rung("w1", {}, 1), rung("aio-w1", aio, 1),
        rung("aio-w1-hi", {**aio, "SCORING_LAB_REDIS_PARSER": "hiredis"}, 1))}
    assert _refused({"factor": "http client", "a": "w1/async", "b": "aio-w1/async"},
                    variants) is None
    why = _refused({"factor": "http client", "a": "w1/async", "b": "aio-w1-hi/async"},
                   variants)
    assert "differ in scoring_handler.redis_parser beyond the factor 'http client'" in why
    assert _refused({"factor": "server", "a": "w1/async", "b": "gone/async"},
                    variants) == "gone/async was not measured in this run"


def test_the_split_reads_each_repeats_searches_and_the_recorded_pairs(tmp_path):
    def search(cap, status="found"):
        return {"shared": {"capacity": cap, "status": status}}

    aio = {"SCORING_LAB_HTTP_CLIENT": "aiohttp"}
    variants = {"w1": {"name": "w1", "scoring_handler_env": {},
                       "scoring_handler_workers_per_core": 1},
                "aio-w1": {"name": "aio-w1", "scoring_handler_env": aio,
                           "scoring_handler_workers_per_core": 1}}
    pairs = [{"factor": "http client", "a": "w1/async", "b": "aio-w1/async"}]
    res = {"manifest": {"ladder": {"pairs": pairs, "paths": [["w1/async", "aio-w1/async"]]}},
           "variants": variants,
           "rows": [{"variant": "w1", "arch": "async", "p50_1_user_ms": 52.0},
                    {"variant": "aio-w1", "arch": "async", "p50_1_user_ms": float("nan")}],
           "capacity_by_repeat": [
               {"w1": {"async": search(200.0)}, "aio-w1": {"async": search(700.0)}},
               {"w1": {"async": search(250.0)}, "aio-w1": {"async": search(750.0)}},
               {"w1": {"async": search(220.0)}, "aio-w1": {"async": search(None, "unfinished")}}]}
    fa = analyse_factors(tmp_path, res, {})
    (p,) = fa["pairs"]
    assert p["a"]["capacity"] == [200.0, 250.0, 220.0] and p["repeats"] == 3
    assert p["undecided"] == "undecided: aio-w1/async has no capacity (unfinished) in repeat 3"
    assert fa["paths"][0]["steps"][0]["ratio"] is None
    assert [o["overhead_ms"] for o in fa["overheads"]] == [pytest.approx(52.0 - 47.0711,
                                                                         abs=1e-3), None]
    res["capacity_by_repeat"][2]["aio-w1"]["async"] = search(660.0)
    fa = analyse_factors(tmp_path, res, {})
    assert fa["pairs"][0]["ratio"]["median"] == pytest.approx(3.0)
    assert fa["paths"][0]["steps"][0]["cumulative"] == pytest.approx(3.0)
    res["manifest"]["ladder"] = {}
    assert analyse_factors(tmp_path, res, {}) is None  # no pairs: no section
