"""Experiment 5's sweep file: profiles, the points and what each changes, validation."""

from __future__ import annotations

import tomllib

import pytest

from experiments.config import ConfigError
from experiments.exp5_builds import EXPERIMENT
from experiments.exp5_builds.report import PARSER_SETTING
from experiments.exp5_builds.run import check_sweeps
from experiments.ladder import parse_ladder
from experiments.registry import BY_NAME, EXPERIMENTS
from services.settings import HttpClient, RedisParser, SyncWorker, settings_from_env

CONFIG = EXPERIMENT.config


def _data():
    with CONFIG.open("rb") as f:
        return tomllib.load(f)


def test_registered_and_every_profile_parses():
    assert EXPERIMENTS["5"] is EXPERIMENT and BY_NAME["experiment-5"] is EXPERIMENT
    full, quick, smoke = (EXPERIMENT.configure(p) for p in ("full", "quick", "smoke"))
    assert full.experiment == "experiment-5"
    assert [v.name for v in smoke.variants] == ["default", "sync-gevent"]
    assert len(quick.variants) == len(full.variants)
    assert smoke.total_s < quick.total_s < full.total_s
    # the ramp goes past 256 users, where httpx's throughput fell under wrk
    assert full.protocol.scenario("load_test").end_users > 256
    assert quick.protocol.scenario("load_test").end_users > 256
    assert {p.protocol.capacity.p99_bound_ms for p in (full, quick, smoke)} == {250}


def test_the_sweeps_cover_each_stacks_capacity_settings():
    points = EXPERIMENT.configure("full").variants
    sweeps = {v.sweep for v in points}
    assert {"sync workers", "sync gthread threads", "sync worker type", "async workers",
            "async HTTP client", "async Redis parser"} <= sweeps
    default = [v for v in points if v.sweep == ""]
    assert [v.name for v in default] == ["default"] and set(default[0].archs) == {"sync",
                                                                                  "async"}
    for v in points:
        if v.sweep:
            assert len(v.archs) == 1 and v.sweep.startswith(v.archs[0]), v.name
        # every point's env is one the services accept, read as they read it
        model = settings_from_env(v.model_api_env)
        scoring = settings_from_env(v.scoring_handler_env)
        # a sync build is the whole sync stack: both services run the same worker type
        assert model.sync_worker is scoring.sync_worker, v.name
        assert model.gthread_threads == scoring.gthread_threads, v.name
    threads = sorted(settings_from_env(v.scoring_handler_env).gthread_threads
                     for v in points if v.sweep == "sync gthread threads")
    assert len(threads) >= 3 and threads == sorted(set(threads))
    assert any(settings_from_env(v.scoring_handler_env).sync_worker is SyncWorker.GEVENT
               for v in points)
    assert any(settings_from_env(v.scoring_handler_env).http_client is HttpClient.AIOHTTP
               for v in points)
    # only the parser points set the parser: every other point is the Python-parser default
    for v in points:
        hiredis = settings_from_env(v.scoring_handler_env).redis_parser is RedisParser.HIREDIS
        assert hiredis == (v.sweep == "async Redis parser"), v.name


def test_the_parser_profile_pairs_each_hiredis_point_with_its_python_twin():
    parser = EXPERIMENT.configure("parser")
    assert parser.protocol.repeats == 2 and parser.protocol.capacity.p99_bound_ms == 250
    names = {v.name: v for v in parser.variants}
    for v in names.values():
        if v.sweep == "async Redis parser":
            twin = names[v.name.removesuffix("-hiredis")]
            env = {k: x for k, x in v.scoring_handler_env.items() if k != PARSER_SETTING}
            assert (twin.scoring_handler_env, twin.scoring_handler_workers_per_core) == (
                env, v.scoring_handler_workers_per_core)
    assert sum(v.sweep == "async Redis parser" for v in names.values()) == 2


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["variants"][1].update(sweep=3), "sweep"),
    (lambda d: d["variants"][2]["model_api_env"].update(SCORING_LAB_SYNC_WORKER=["x"]),
     "SCORING_LAB_SYNC_WORKER"),
    (lambda d: d["variants"][3]["scoring_handler_env"].update(SCORING_LAB_GTHREAD_THREADS="0"),
     "SCORING_LAB_GTHREAD_THREADS='0'"),
    (lambda d: d["variants"][5]["model_api_env"].update(SCORING_LAB_SYNC_WORKER="tornado"),
     "SCORING_LAB_SYNC_WORKER='tornado'"),
    (lambda d: d["profiles"]["smoke"].update(variants=["sync-gthread-9"]), "unknown variant"),
    (lambda d: d["variants"][1].update(scoring_handler_workers_per_core=0),
     "scoring_handler_workers_per_core"),
])
def test_bad_sweep_files_name_the_problem(mutate, message):
    data = _data()
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        parse_ladder(data, "full", source=str(CONFIG))


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["variants"][0].update(sweep="x"), "one point with no `sweep`"),
    (lambda d: d["variants"][1].update(sweep=""), "one point with no `sweep`"),
    (lambda d: d["variants"][1].update(archs=["sync", "async"]), "measures one architecture"),
])
def test_a_sweep_file_needs_one_shared_build_and_one_arch_per_point(mutate, message):
    data = _data()
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        check_sweeps(parse_ladder(data, "full", source=str(CONFIG)))
