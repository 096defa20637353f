"""Experiment 9's config: registered, every profile parses with the planned times the brief
asks for, the builds deploy what they say, and bad values are refused by name."""

from __future__ import annotations

import tomllib

import pytest

from experiments.config import ConfigError
from experiments.exp9_overload import EXPERIMENT
from experiments.exp9_overload.run import SLOWDOWN_ENV, deploy_vars, parse_overload
from experiments.registry import BY_NAME, EXPERIMENTS
from services.settings import SyncWorker, settings_from_env

SERVICES = {"model-sync": {"run_dir": "/var/tmp/lab"}}


def _data() -> dict:
    with EXPERIMENT.config.open("rb") as f:
        return tomllib.load(f)


def test_registered_and_every_profile_parses_within_its_time():
    assert EXPERIMENTS["9"] is EXPERIMENT and BY_NAME["experiment-9"] is EXPERIMENT
    full, quick, smoke = (EXPERIMENT.configure(p) for p in ("full", "quick", "smoke"))
    assert EXPERIMENT.default_profile() == "full"
    assert smoke.total_s < 150  # the end-to-end test's run
    assert 15 * 60 <= quick.total_s <= 30 * 60
    assert quick.total_s < full.total_s
    assert {c.bound_ms for c in (full, quick, smoke)} == {250}  # the shared bound
    assert full.sweep.factors[0] == 0.5 and full.sweep.factors[-1] == 3.0
    assert full.faults.load == 0.6 and full.metastability.load == 0.9
    assert set(full.faults.kinds) == {"model_slow", "model_down", "redis_frozen", "worker_kill"}
    assert smoke.builds == ("admission",) and full.builds == ("default", "admission")


def test_each_build_deploys_its_env_and_the_slowdown_knob():
    cfg = EXPERIMENT.configure("full")
    default = deploy_vars(cfg, "default", SERVICES)
    assert default == {"model_api_env": {SLOWDOWN_ENV: "/var/tmp/lab/faults/model-slowdown"}}
    admission = deploy_vars(cfg, "admission", SERVICES)
    settings = settings_from_env(admission["scoring_handler_env"])
    assert settings.admission_limit > 0 and settings.admission_deadlines
    assert settings.admission_budget_s == cfg.bound_ms / 1000
    # meinheld queues where no limit acts: the sync admission build runs gthread
    assert settings.sync_worker is SyncWorker.GTHREAD
    assert settings_from_env(admission["model_api_env"]).model_slowdown_file


def test_the_loads_are_multiples_of_each_builds_capacity():
    data = _data()
    data["build"]["admission"]["capacity_rps"] = {"async": 50.0}
    cfg = parse_overload(data, "full").with_measured_capacities()
    assert cfg.capacity_of("admission", "async") == 50.0
    assert cfg.capacity_of("admission", "sync") == cfg.capacity_rps["sync"]


@pytest.mark.parametrize(("change", "match"), [
    (lambda d: d.update(builds=["default", "nope"]), r"builds \['nope'\] have no"),
    (lambda d: d["faults"].update(kinds=["meteor"]), "kinds"),
    (lambda d: d["sweep"].update(factors=[]), "factors"),
    (lambda d: d["sweep"].update(step_s=0), "step_s = 0"),
    (lambda d: (d.pop("capacity_from"), d.update(capacity_rps={"sync": 1.0})),
     r"capacity_rps has no figure for \['async'\] and there is no \[capacity_from\]"),
    (lambda d: d["capacity_from"].update(runs=[]), "runs"),
    (lambda d: d["metastability"].update(triggers=["slow"]), "triggers"),
    (lambda d: d["faults"].update(colour="red"), "unknown key 'colour'"),
])
def test_bad_values_are_named(change, match):
    data = _data()
    change(data)
    with pytest.raises(ConfigError, match=match):
        parse_overload(data, "full", source="exp9.toml")
