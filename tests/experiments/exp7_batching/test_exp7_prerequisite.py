"""A point on a model server the default build does not deploy (BentoML): the ladder deploys it
first (with the point's device and batching settings), then the rung with the scoring handlers
pointed at the address that deploy wrote; the next point turns it off; a failed first deploy
is recorded and the ladder goes on. The deploys are faked here (the recorded runs and the
end-to-end test deploy for real): what is checked is the order and what each deploy gets."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments.exp7_batching import EXPERIMENT
from experiments.exp7_batching.run import SERVER_SWITCHES
from experiments.lab import ladder as lab_ladder
from experiments.lab.deploy import DeployError
from experiments.lab.session import RunOptions

BENTO_URL = "http://127.0.0.1:3000"
BASE = {"model-sync": {"url": "http://127.0.0.1:5000", "cpus": [0]},
        "model-async": {"url": "http://127.0.0.1:8000", "cpus": [0]},
        "scoring-sync": {"url": "http://127.0.0.1:5001", "cpus": [0]}}


class FakeRun:
    def __init__(self, path: Path):
        self.path, self.raw, self.manifest, self.warnings = path, path / "raw", {}, []

    def update(self, **fields):
        self.manifest.update(fields)

    def warn(self, message):
        self.warnings.append(message)


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """The ladder's run with a fake session and deploys: each deploy's extra vars recorded,
    the topology holding model-bentoml exactly while a deploy turned it on."""
    lab = SimpleNamespace(run=FakeRun(tmp_path), topology=SimpleNamespace(services=dict(BASE)),
                          progress=SimpleNamespace(say=lambda *_: None), deploy_vars={},
                          step_hooks=(), deploys=[], fail_on=None)

    def switch(lab_, options, extra_vars, *, log, what):
        lab.deploys.append((log.name, extra_vars))
        if lab.fail_on and lab.fail_on in log.name:
            raise DeployError(f"deploy of {log.name} failed")
        services = dict(BASE)
        if extra_vars.get(SERVER_SWITCHES["model-bentoml"]):
            services["model-bentoml"] = {"url": BENTO_URL, "cpus": [0]}
        lab.topology = SimpleNamespace(services=services)
        return {"ok": True}

    @contextlib.contextmanager
    def session(*args, **kwargs):
        yield lab

    monkeypatch.setattr(lab_ladder, "session", session)
    monkeypatch.setattr(lab_ladder, "switch", switch)
    monkeypatch.setattr(lab_ladder, "workers_of", lambda *a: {})
    monkeypatch.setattr(lab_ladder, "_measure", lambda *a: None)
    return lab


def _run(points: list[str]):
    # the quick profile: one repeat, BentoML against the async handler only
    quick = EXPERIMENT.configure("quick")
    by_name = {v.name: v for v in quick.variants}
    ladder = dataclasses.replace(quick, variants=tuple(by_name[n] for n in points))
    options = RunOptions(results_dir=Path("."), inventory="i", ansible_playbook="a")
    return lab_ladder.run(ladder, options, finish=lambda folder: None)


def test_bentoml_is_deployed_first_then_called_then_turned_off(lab):
    _run(["bentoml-1-slot", "on-demand-1-slot"])
    names = [name for name, _ in lab.deploys]
    assert names == ["01-bentoml-1-slot-prerequisite.log", "01-bentoml-1-slot.log",
                     "02-on-demand-1-slot.log", "99-restore-default.log"]
    pre, rung, plain, _ = (v for _, v in lab.deploys)
    # first BentoML with the point's device and batching, the handlers untouched
    assert pre["model_bentoml_enabled"] is True and pre["model_bentoml_device_slots"] == 1
    assert pre["model_bentoml_max_latency_ms"] == 100 and "scoring_handler_model_urls" not in pre
    # then the same settings, the handlers the point measures pointed at it, the others not
    assert {k: rung[k] for k in pre} == pre
    assert rung["scoring_handler_model_urls"] == {"sync": BASE["model-sync"]["url"],
                                                  "async": BENTO_URL}
    # the next point leaves it off: the server runs only while it is measured
    assert "model_bentoml_enabled" not in plain
    entry = lab.run.manifest["variants"][0]
    assert entry["prerequisite"]["deploy_vars"] == pre and "failed" not in entry


def test_a_server_already_deployed_needs_no_first_deploy(lab):
    lab.topology.services["model-bentoml"] = {"url": BENTO_URL, "cpus": [0]}
    _run(["bentoml-no-limit"])
    assert [name for name, _ in lab.deploys] == ["01-bentoml-no-limit.log",
                                                "99-restore-default.log"]


def test_a_failed_first_deploy_is_recorded_and_the_ladder_goes_on(lab):
    lab.fail_on = "prerequisite"
    _run(["bentoml-1-slot", "on-demand-1-slot"])
    failed, measured = lab.run.manifest["variants"]
    assert failed["name"] == "bentoml-1-slot"
    assert failed["failed"].startswith("its prerequisite deploy: deploy of")
    assert measured["name"] == "on-demand-1-slot" and "failed" not in measured
    assert any("bentoml-1-slot was not measured" in w for w in lab.run.warnings)
