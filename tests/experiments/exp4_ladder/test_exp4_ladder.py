"""Experiment 4's ladder file: profiles, variant selection, deploy vars, validation."""

from __future__ import annotations

import copy
import tomllib

import pytest

from experiments.config import ConfigError
from experiments.exp4_ladder import EXPERIMENT
from experiments.lab import topology as topology_mod
from experiments.ladder import load_ladder, parse_ladder

CONFIG = EXPERIMENT.config


def _data():
    with CONFIG.open("rb") as f:
        return tomllib.load(f)


def _topology(scoring_cpus=(0,), model_cpus=(0,)):
    services = {name: {"host": "localhost", "url": "http://127.0.0.1:1", "cpus": list(cpus),
                       "workers": None}
                for name, cpus in (("redis", model_cpus), ("model-sync", model_cpus),
                                   ("model-async", model_cpus), ("scoring-sync", scoring_cpus),
                                   ("scoring-async", scoring_cpus))}
    return topology_mod.parse({"format_version": 1, "services": services,
                               "loadgen": [{"host": "localhost", "cpus": [1]}]})


def test_profiles_and_the_smoke_subset():
    full = load_ladder(CONFIG, "full")
    names = [v.name for v in full.variants]
    assert names[:2] == ["original", "default"]
    assert {"async-sequential", "sync-meinheld-patch", "sync-workers-4x", "sync-worker-sync",
            "sync-worker-gthread", "async-aiohttp"} <= set(names)
    assert full.protocol.scenario("load_test").end_users == 300
    smoke = load_ladder(CONFIG, "smoke")
    assert [v.name for v in smoke.variants] == ["original", "default", "async-sequential"]
    assert smoke.protocol.scenario("load_test").end_users == 8
    quick = load_ladder(CONFIG, "quick")
    assert len(quick.variants) == len(full.variants)
    assert quick.total_s < full.total_s


def test_runs_probe_each_arch_and_the_sync_model_api():
    smoke = load_ladder(CONFIG, "smoke")
    runs = [(v.name, step, arch, arrival) for v, step, arch, arrival in smoke.runs()]
    assert ("original", "probe-model", "sync", "spread") in runs
    assert ("async-sequential", "probe", "async", "spread") in runs
    assert not any(name == "async-sequential" and arch == "sync" for name, _, arch, _ in runs)
    gthread = next(v for v in load_ladder(CONFIG, "full").variants
                   if v.name == "sync-worker-gthread")
    assert gthread.arrivals == ("spread", "bursty")


def test_deploy_vars_change_only_what_the_variant_names():
    variants = {v.name: v for v in load_ladder(CONFIG, "full").variants}
    topo = _topology()
    assert variants["default"].deploy_vars(topo.services) == {}
    assert variants["original"].deploy_vars(topo.services) == {"scoring_handler_env": {
        "SCORING_LAB_CLIENT_PER_REQUEST": "true", "SCORING_LAB_BLOCKING_REDIS": "true"}}
    assert variants["sync-workers-4x"].deploy_vars(topo.services) == {
        "model_api_workers": 4, "scoring_handler_workers": 4}
    wide = _topology(scoring_cpus=(2, 3, 4), model_cpus=(0, 1))
    assert variants["sync-workers-4x"].deploy_vars(wide.services) == {
        "model_api_workers": 8, "scoring_handler_workers": 12}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["variants"][0].update(bogus=1), "bogus"),
    (lambda d: d["variants"][0].update(archs=["sync", "nope"]), "archs"),
    (lambda d: d["variants"][0].update(arrivals=[]), "arrivals"),
    (lambda d: d["variants"][0].update(scoring_handler_env={"PATH": "x"}), "SCORING_LAB_"),
    (lambda d: d["variants"].append(copy.deepcopy(d["variants"][0])), "duplicate"),
    (lambda d: d["profiles"]["smoke"].update(variants=["nope"]), "unknown variant"),
    (lambda d: d.pop("variants"), "no \\[\\[variants\\]\\]"),
    (lambda d: d["scenarios"].pop("probe"), "probe"),
    (lambda d: d["scenarios"]["probe"].update(users=3), "users = 1"),
])
def test_bad_ladders_name_the_problem(mutate, message):
    data = _data()
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        parse_ladder(data, "full")


def test_every_spread_rung_searches_its_capacity_under_one_bound():
    for profile in ("full", "quick", "smoke"):
        ladder = load_ladder(CONFIG, profile)
        caps = [(v.name, arch) for v, step, arch, _ in ladder.runs() if step == "capacity"]
        spread = [(v.name, arch) for v in ladder.variants if "spread" in v.arrivals
                  for arch in v.archs]
        assert caps == spread and caps, profile
        assert ladder.protocol.capacity.p99_bound_ms == 250
    # bursts are a closed-loop idea: the bursty-only rung has no search of its own
    full = load_ladder(CONFIG, "full")
    assert not any(v.name == "sync-worker-meinheld-bursty" and step == "capacity"
                   for v, step, _, _ in full.runs())
    quick, smoke = load_ladder(CONFIG, "quick"), load_ladder(CONFIG, "smoke")
    # the profiles override the search's budget, not its bound
    assert quick.protocol.capacity.max_steps < full.protocol.capacity.max_steps
    assert smoke.protocol.capacity.max_rate < quick.protocol.capacity.max_rate
    assert {p.protocol.capacity.p99_bound_ms for p in (full, quick, smoke)} == {250}
    # each search counted in the plan at its upper estimate
    runs = len([r for r in smoke.runs() if r[1] == "capacity"])
    without = _data()
    del without["scenarios"]["capacity"]
    bare = parse_ladder(without, "smoke")
    assert not bare.has_capacity and not any(r[1] == "capacity" for r in bare.runs())
    assert smoke.total_s - bare.total_s == pytest.approx(
        runs * (smoke.protocol.capacity.planned_s + smoke.protocol.pause_s))


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("capacity"), "capacity"),
    (lambda d: d["capacity"].update(p99_bound_ms=0), "p99_bound_ms"),
    (lambda d: d["capacity"].update(bogus=1), "bogus"),
    (lambda d: d["capacity"].update(growth=1.0), "growth"),
    (lambda d: d["profiles"]["quick"]["capacity"].update(max_steps=0), "max_steps"),
    (lambda d: d["scenarios"]["capacity"].update(kind="ramp"), "capacity"),
    (lambda d: d["capacity"].update(max_step_s=5), "max_step_s"),
    (lambda d: d["capacity"].update(max_step_s=-1), "max_step_s"),
])
def test_bad_capacity_tables_name_the_problem(mutate, message):
    data = _data()
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        parse_ladder(data, "quick")


def test_each_capacity_search_follows_its_step_load():
    for profile in ("full", "quick"):
        for repeat in (1, 2):
            runs = [(v.name, step, arch, arrival)
                    for v, step, arch, arrival in load_ladder(CONFIG, profile).runs(repeat)]
            for i, (name, step, arch, _) in enumerate(runs):
                if step == "capacity":
                    assert (name, "load_test", arch, "spread") in runs[:i], (profile, name)


def test_a_search_starts_where_the_rung_is_known_best():
    from experiments.analysis.breaking_point import BreakingPoint
    from experiments.lab.capacity import HINT_GROWTH
    from experiments.lab.ladder import search_start

    params = load_ladder(CONFIG, "quick").protocol.capacity

    def ramp(found, at, best):
        return BreakingPoint(found=found, users=None, offered_rps=None, achieved_rps=at,
                             p95_ms=None, t_s=None, at_unix=None, criterion=None,
                             max_achieved_rps=best)

    knee = ramp(True, 2.2, 3.0)
    assert search_start(params, 1.8, knee)[:2] == (1.8, HINT_GROWTH)
    assert search_start(params, None, knee)[:2] == (2.2, params.growth)
    # no knee: the best throughput the ramp reached is a lower bound to grow from
    assert search_start(params, None, ramp(False, None, 149.0))[:2] == (149.0, params.growth)
    assert search_start(params, None, None)[:2] == (None, params.growth)
    assert search_start(params, None, ramp(False, None, 0.0))[0] is None
