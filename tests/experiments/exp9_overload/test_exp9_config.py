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
    # the end-to-end test's run: every fault (and the control) and trigger, briefly
    assert smoke.total_s < 220
    assert 15 * 60 <= quick.total_s <= 30 * 60
    assert quick.total_s < full.total_s
    assert {c.bound_ms for c in (full, quick, smoke)} == {250}  # the shared bound
    assert full.sweep.factors[0] == 0.5 and full.sweep.factors[-1] == 3.0
    assert full.faults.load == 0.6 and full.metastability.load == 0.9
    assert full.faults.kinds[0] == "none"  # the control first, then every fault
    assert set(full.faults.kinds) == {"none", "model_slow", "model_down", "redis_frozen",
                                      "redis_restart", "worker_kill", "chunked_trailer"}
    assert smoke.builds == ("admission",) and quick.builds == ("default", "admission")
    assert full.builds == ("default", "admission", "admission-fixed", "best-sync",
                           "best-async")
    # a best build is one architecture's: the plan counts the architectures each build runs
    assert full.archs_of("best-sync") == ("sync",) and full.archs_of("default") == ("sync", "async")
    assert full.total_s == pytest.approx(full.arch_s * 8)
    # the limits profile: the two admission builds side by side, no fault timelines
    limits = EXPERIMENT.configure("limits")
    assert limits.builds == ("admission", "admission-fixed") and limits.faults.kinds == ()
    assert 10 * 60 <= limits.total_s <= 20 * 60
    # the best profile: each architecture's best build (one cell each), quick's timelines
    best = EXPERIMENT.configure("best")
    assert best.builds == ("best-sync", "best-async") and best.faults.kinds == full.faults.kinds
    assert best.total_s == pytest.approx(best.arch_s * 2) and best.arch_s == quick.arch_s


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
    # the fixed-limit control differs from it in the adaptive switch alone (and so has no
    # latency target to adapt to)
    fixed = deploy_vars(cfg, "admission-fixed", SERVICES)
    assert settings.admission_adaptive
    adaptive_env = admission["scoring_handler_env"]
    assert fixed["scoring_handler_env"] == {
        **{k: v for k, v in adaptive_env.items() if k != "SCORING_LAB_ADMISSION_TARGET_S"},
        "SCORING_LAB_ADMISSION_ADAPTIVE": "false"}
    assert not settings_from_env(fixed["scoring_handler_env"]).admission_adaptive


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
    (lambda d: (d.update(architectures=["async"]), d["build"]["best-sync"]),
     r"build.best-sync.archs: \['sync'\] are not among the architectures \['async'\]"),
    (lambda d: d["build"]["best-async"].update(scoring_handler_workers=0),
     "scoring_handler_workers"),
])
def test_bad_values_are_named(change, match):
    data = _data()
    change(data)
    with pytest.raises(ConfigError, match=match):
        parse_overload(data, "full", source="exp9.toml")


def test_the_best_builds_deploy_their_settings_and_carry_their_own_capacity():
    cfg = EXPERIMENT.configure("full")
    best_async = deploy_vars(cfg, "best-async", SERVICES)
    assert best_async["scoring_handler_workers"] == 1
    assert best_async["scoring_handler_env"] == {"SCORING_LAB_HTTP_CLIENT": "aiohttp"}
    best_sync = settings_from_env(deploy_vars(cfg, "best-sync", SERVICES)["scoring_handler_env"])
    assert best_sync.sync_worker is SyncWorker.GTHREAD and best_sync.gthread_threads == 32
    # their 1x is their own variant's found capacity, not the default stack's
    for build, arch, variant in (("best-sync", "sync", "sync-gthread-32"),
                                 ("best-async", "async", "async-aiohttp-workers-1")):
        source = cfg.capacity_source[f"{build}/{arch}"]
        assert source["variant"] == variant
        found = [f["capacity_rps"] for f in source["figures"][arch] if f["status"] == "found"]
        assert cfg.capacity_of(build, arch) == min(found) > cfg.capacity_rps[arch]
