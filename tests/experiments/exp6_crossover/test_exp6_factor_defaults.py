"""Experiment 6's factor defaults are the services' declared defaults: a SCORING_LAB_* variable
left in the controller's shell must not move them (the baseline each factor is swept around)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from services.settings import ENV_PREFIX, Settings, declared_defaults
from tests.conftest import ROOT

# The factor defaults are computed when the run module is imported, so each reading is a fresh
# interpreter with the environment under test.
_READ = ("import json; from experiments.exp6_crossover.run import FACTORS; "
         "print(json.dumps({name: f.default for name, f in FACTORS.items()}))")

# One stray value for every setting a factor's default comes from.
STRAY = {"SCORING_LAB_CPU_BURN_S": "0.007", "SCORING_LAB_SLEEP_MIN_S": "0.2",
         "SCORING_LAB_SLEEP_MAX_S": "0.3", "SCORING_LAB_MODEL_CALLS": "5",
         "SCORING_LAB_HANDLER_CPU_S": "0.003"}


def _factor_defaults() -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", _READ], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _clear_lab_env(monkeypatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(key)


def test_a_stray_variable_in_the_controllers_shell_leaves_the_factor_defaults(monkeypatch):
    _clear_lab_env(monkeypatch)
    for key, value in STRAY.items():
        monkeypatch.setenv(key, value)
    fields = Settings.model_fields
    assert _factor_defaults() == {
        "model_cpu_ms": fields["cpu_burn_s"].default * 1000,
        "model_latency_ms": (fields["sleep_min_s"].default + fields["sleep_max_s"].default)
        / 2 * 1000,
        "model_calls": fields["model_calls"].default,
        "handler_cpu_ms": fields["handler_cpu_s"].default * 1000,
    }


def test_declared_defaults_ignore_the_process_environment(monkeypatch):
    _clear_lab_env(monkeypatch)
    monkeypatch.setenv("SCORING_LAB_MODEL_CALLS", "5")
    assert Settings().model_calls == 5  # what a service started from this shell would run with
    assert declared_defaults().model_calls == Settings.model_fields["model_calls"].default
    assert declared_defaults() == Settings.model_construct()
