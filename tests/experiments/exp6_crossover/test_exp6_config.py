"""Experiment 6's crossover file: the points it makes (one factor at a time, a shared baseline
per tier, the best builds merged in), the services' settings they set, and validation."""

from __future__ import annotations

import tomllib

import pytest

from experiments.config import ConfigError
from experiments.exp6_crossover import EXPERIMENT
from experiments.exp6_crossover.run import FACTORS, parse_crossover
from experiments.registry import EXPERIMENTS
from services.settings import HttpClient, Settings, SyncWorker, settings_from_env

CONFIG = EXPERIMENT.config


def _data():
    with CONFIG.open("rb") as f:
        return tomllib.load(f)


def test_registered_and_every_profile_parses():
    assert EXPERIMENTS["6"] is EXPERIMENT
    full, quick, smoke = (EXPERIMENT.configure(p) for p in ("full", "quick", "smoke"))
    assert full.experiment == "experiment-6"
    assert full.tiers == ("default", "best") and quick.tiers == ("best",)
    assert [v.name for v in smoke.variants] == ["baseline-default", "model_cpu_ms-5-default"]
    assert smoke.total_s < quick.total_s < full.total_s
    # the ranges: CPU per prediction 0-20 ms, latency 1-400 ms, calls 1-8
    assert full.factors["model_cpu_ms"] == (0, 2, 5, 10, 20)
    latency = full.factors["model_latency_ms"]
    assert (min(latency), max(latency)) == (1, 400)
    assert full.factors["model_calls"] == (1, 2, 4, 8)


def test_the_crossing_profile_brackets_the_model_cpu_crossing_finer():
    quick, crossing = (EXPERIMENT.configure(p) for p in ("quick", "crossing"))
    assert [v.name for v in crossing.variants] == [
        "baseline-best", *(f"model_cpu_ms-{ms}-best" for ms in (2, 3, 4, 5))]
    # quick's crossing (~4.5 ms) lies inside, in 1 ms steps
    assert crossing.factors["model_cpu_ms"] == (0, 2, 3, 4, 5)
    q, c = quick.protocol.capacity, crossing.protocol.capacity
    assert c.precision < q.precision and c.max_steps > q.max_steps
    assert c.p99_bound_ms == q.p99_bound_ms


def test_one_factor_at_a_time_around_a_shared_baseline():
    full = EXPERIMENT.configure("full")
    names = [v.name for v in full.variants]
    assert len(names) == len(set(names))
    # per tier: one baseline and one point per non-default value of every factor
    per_tier = 1 + sum(len([x for x in vals if x != FACTORS[f].default])
                       for f, vals in full.factors.items())
    assert len(names) == 2 * per_tier
    assert full.points["baseline-best"] == {"factor": "", "value": None, "tier": "best"}
    assert "model_latency_ms-45-default" not in names  # 45 ms is the baseline
    for v in full.variants:
        point = full.points[v.name]
        assert set(v.archs) == {"sync", "async"}
        model = settings_from_env(v.model_api_env)
        scoring = settings_from_env(v.scoring_handler_env)
        # the best tier carries each architecture's best build, the default tier nothing
        if point["tier"] == "best":
            assert scoring.sync_worker is SyncWorker.GTHREAD is model.sync_worker
            assert scoring.http_client is HttpClient.AIOHTTP
        else:
            assert scoring.sync_worker is SyncWorker.MEINHELD is model.sync_worker
            assert scoring.http_client is HttpClient.HTTPX
        # exactly the point's factor differs from the services' defaults
        defaults = Settings()
        value = point["value"]
        f = point["factor"]
        assert model.cpu_burn_s == pytest.approx(value / 1000 if f == "model_cpu_ms"
                                                 else defaults.cpu_burn_s)
        assert scoring.model_calls == (value if f == "model_calls" else defaults.model_calls)
        assert scoring.handler_cpu_s == pytest.approx(value / 1000 if f == "handler_cpu_ms"
                                                      else defaults.handler_cpu_s)
        mean_sleep_ms = (model.sleep_min_s + model.sleep_max_s) / 2 * 1000
        assert mean_sleep_ms == pytest.approx(value if f == "model_latency_ms" else 45)
        assert model.sleep_min_s < model.sleep_max_s


def test_the_plan_is_recorded_with_the_ladder():
    plan = EXPERIMENT.configure("quick").to_dict()["crossover"]
    assert plan["threshold"] == 0.10 and plan["tiers"] == ["best"]
    assert plan["factors"]["model_latency_ms"] == {
        "values": [45.0, 200.0], "default": 45.0, "unit": "ms",
        "what": "model latency (the model API's wait per prediction)"}
    assert plan["points"]["model_latency_ms-200-best"]["value"] == 200


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["crossover"]["factors"].update(gpu_ms=[1]), "unknown factor"),
    (lambda d: d["crossover"]["factors"].update(model_calls=[1, 2.5]), "whole number"),
    (lambda d: d["crossover"]["factors"].update(model_calls=[0, 2]), "SCORING_LAB_MODEL_CALLS='0'"),
    (lambda d: d["crossover"]["factors"].update(model_cpu_ms=[-1]), ">= 0"),
    (lambda d: d["crossover"]["factors"].update(model_cpu_ms=[2, 2]), "duplicate"),
    (lambda d: d["crossover"]["factors"].update(model_calls=[20]), "SCORING_LAB_MODEL_CALLS='20'"),
    (lambda d: d["crossover"].update(tiers=["fastest"]), "tiers"),
    (lambda d: d["crossover"].update(threshold=1.5), "threshold"),
    (lambda d: d["crossover"]["builds"]["best"].update(workers=4), "workers"),
    (lambda d: d["crossover"]["builds"].pop("best"), "tier 'best' needs"),
    (lambda d: d["crossover"]["builds"]["best"]["scoring_handler_env"].update(
        SCORING_LAB_HTTP_CLIENT="curl"), "SCORING_LAB_HTTP_CLIENT='curl'"),
    (lambda d: d["profiles"]["quick"]["crossover"].update(bogus=1), "bogus"),
    (lambda d: d.update(variants=[{"name": "x"}]), "no \\[\\[variants\\]\\]"),
])
def test_bad_crossover_files_name_the_problem(mutate, message):
    data = _data()
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        parse_crossover(data, "full", source=str(CONFIG))
