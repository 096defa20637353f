"""Experiment 7's config: profiles, the points made from [batching] (every model build on every
device, their role variables), validation naming the bad value, and the model server a point
names resolved from the deployed topology."""

from __future__ import annotations

import re
import tomllib

import pytest

from experiments.config import ConfigError
from experiments.exp7_batching import EXPERIMENT
from experiments.exp7_batching.run import DEVICE_VARS, parse_batching, role_variables
from experiments.registry import BY_NAME, EXPERIMENTS

CONFIG = EXPERIMENT.config


def _data():
    with CONFIG.open("rb") as f:
        return tomllib.load(f)


def test_registered_and_every_profile_parses():
    assert EXPERIMENTS["7"] is EXPERIMENT and BY_NAME["experiment-7"] is EXPERIMENT
    full, quick, smoke = (EXPERIMENT.configure(p) for p in ("full", "quick", "smoke"))
    assert full.experiment == "experiment-7"
    assert smoke.total_s < 120 < quick.total_s < full.total_s
    assert 30 * 60 < quick.total_s < 50 * 60, quick.total_s
    assert {p.protocol.capacity.p99_bound_ms for p in (full, quick, smoke)} == {250}
    # the smoke run: the async handler, both builds, one slot
    assert [(v.name, v.archs) for v in smoke.variants] == [
        ("micro-1-slot", ("async",)), ("on-demand-1-slot", ("async",))]


def test_every_build_on_every_device_with_its_role_variables():
    points = {v.name: v for v in EXPERIMENT.configure("full").variants}
    assert list(points) == ["micro-1-slot", "on-demand-1-slot", "bentoml-1-slot",
                            "micro-no-limit", "on-demand-no-limit", "bentoml-no-limit"]
    micro, plain = points["micro-1-slot"], points["on-demand-no-limit"]
    assert micro.archs == ("async",) and plain.archs == ("sync", "async")
    assert micro.deploy_vars({}) == {
        "model_api_batching": "micro", "model_api_batch_max_size": 32,
        "model_api_batch_max_wait_ms": 5, "model_api_workers": 1, "model_api_device_slots": 1,
        "model_api_device_per_item_ms": 0.5}
    # no limit is written out too: an inventory's own device setting never leaks in
    assert plain.deploy_vars({}) == {"model_api_device_slots": 0,
                                     "model_api_device_per_item_ms": 0.5}
    assert (micro.model, micro.device, micro.slots) == ("micro", "1-slot", 1)
    # BentoML: its role turned on by the point, its own device variables, both handlers
    bento = points["bentoml-1-slot"]
    assert bento.archs == ("sync", "async") and bento.model_server == "model-bentoml"
    assert bento.role_vars == {
        "model_bentoml_enabled": True, "model_bentoml_batch_max_size": 32,
        "model_bentoml_max_latency_ms": 100, "model_bentoml_device_slots": 1,
        "model_bentoml_device_per_item_ms": 0.5}
    # the tradeoff profile: one slot, the async handler, each batcher's wait either side
    trade = EXPERIMENT.configure("tradeoff")
    # (in the tables' order)
    assert [v.name for v in trade.variants] == [
        "micro-1-slot", "on-demand-1-slot", "bentoml-1-slot", "micro-wait-1-1-slot",
        "micro-wait-20-1-slot", "bentoml-latency-50-1-slot", "bentoml-latency-250-1-slot"]
    assert {v.archs for v in trade.variants} == {("async",)}
    waits = {v.model: v.role_vars.get("model_api_batch_max_wait_ms") for v in trade.variants}
    latencies = {v.model: v.role_vars.get("model_bentoml_max_latency_ms")
                 for v in trade.variants}
    assert (waits["micro-wait-1"], waits["micro"], waits["micro-wait-20"]) == (1, 5, 20)
    assert (latencies["bentoml-latency-50"], latencies["bentoml"],
            latencies["bentoml-latency-250"]) == (50, 100, 250)
    # the quick profile measures it against the async handler only
    quick = {v.name: v for v in EXPERIMENT.configure("quick").variants}
    assert quick["bentoml-no-limit"].archs == ("async",)
    # the sync-bentoml profile: the sync handler on BentoML and on demand, both devices
    sync_bento = {v.name: v for v in EXPERIMENT.configure("sync-bentoml").variants}
    assert sorted(sync_bento) == ["bentoml-1-slot", "bentoml-no-limit", "on-demand-1-slot",
                                  "on-demand-no-limit"]
    assert {v.archs for v in sync_bento.values()} == {("sync",)}
    # every role variable a point sets is one a role declares
    known = role_variables()
    assert all(set(v.role_vars) <= known for v in points.values())
    assert {name for pair in DEVICE_VARS.values() for name in pair} <= known


def _with(batching_patch: dict, profile: str | None = None):
    data = _data()
    for key, value in batching_patch.items():
        data["batching"][key] = value
    return parse_batching(data, profile)


@pytest.mark.parametrize(("patch", "message"), [
    ({"models": {"x": {"scoring": ["async"], "deploy_vars": {"model_api_batchingg": "micro"}}}},
     "'model_api_batchingg' is no role variable"),
    ({"models": {"x": {"scoring": ["async"], "deploy_vars": {"model_api_device_slots": 2}}}},
     "model_api_device_slots: the device sets it"),
    ({"models": {"x": {"scoring": ["gevent"]}}}, "scoring = ['gevent']"),
    ({"models": {"x": {"scoring": ["async"], "model_server": "model-bento"}}},
     "model_server = 'model-bento': no device variables known"),
    ({"models": {"x": {"scoring": ["async"], "model_server": "model-bentoml",
                       "deploy_vars": {"model_bentoml_enabled": False}}}},
     "model_bentoml_enabled: the point sets it"),
    ({"devices": {"one": {"slots": -1}}}, "slots = -1"),
    ({"devices": {"one": {"slots": 1, "per_item_ms": "fast"}}}, "per_item_ms = 'fast'"),
    ({"only_devices": ["2-slots"]}, "unknown name '2-slots'"),
    ({"margin": 1.5}, "1.5: expected a fraction"),
    ({"bogus": 1}, "unknown key 'bogus'"),
])
def test_bad_values_are_named(patch, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _with(patch)


def test_no_variants_table_and_no_empty_selection():
    data = _data()
    data["variants"] = [{"name": "x"}]
    with pytest.raises(ConfigError, match="no \\[\\[variants\\]\\] here"):
        parse_batching(data)
    with pytest.raises(ConfigError, match="no point left"):
        _with({"only_models": ["micro"], "only_scoring": ["sync"]})


def test_a_named_model_server_is_called_through_the_topology():
    # the mechanism a BentoML build uses, shown with a server the lab has (DEVICE_VARS knows it)
    data = _data()
    data["batching"]["models"]["other"] = {"scoring": ["async"], "model_server": "model-sync"}
    data["batching"]["only_models"] = ["other"]
    point = {v.name: v for v in parse_batching(data).variants}["other-1-slot"]
    services = {"model-sync": {"url": "http://127.0.0.1:5000"},
                "model-async": {"url": "http://127.0.0.1:8000"}}
    deploy = point.deploy_vars(services)
    assert deploy["scoring_handler_model_urls"] == {"sync": "http://127.0.0.1:5000",
                                                    "async": "http://127.0.0.1:5000"}
    with pytest.raises(ConfigError, match="'model-sync' is not in the deployed topology"):
        point.deploy_vars({"model-async": {"url": "http://127.0.0.1:8000"}})


def test_a_server_off_by_default_is_deployed_first_and_then_called():
    point = {v.name: v for v in EXPERIMENT.configure("full").variants}["bentoml-no-limit"]
    services = {"model-sync": {"url": "http://127.0.0.1:5000"},
                "model-async": {"url": "http://127.0.0.1:8000"}}
    # not deployed: the point's own settings first, the handlers as they are
    assert point.prerequisite_vars(services) == point.role_vars
    deployed = {**services, "model-bentoml": {"url": "http://127.0.0.1:3000"}}
    assert point.prerequisite_vars(deployed) is None
    assert point.deploy_vars(deployed)["scoring_handler_model_urls"] == {
        "sync": "http://127.0.0.1:3000", "async": "http://127.0.0.1:3000"}
    # the lab's own model APIs never need a first deploy
    plain = {v.name: v for v in EXPERIMENT.configure("full").variants}["on-demand-no-limit"]
    assert plain.prerequisite_vars(services) is None
