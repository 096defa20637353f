"""The BentoML model server's program file: off in every shipped inventory, and when on, a
pinned ``python -m services.bentoml_model`` from its own venv with settings the service accepts."""

from __future__ import annotations

import re

import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import FilterModule

from services import bentoml_model
from services.settings import settings_from_env
from tests.ansible.ansible_testutil import ANSIBLE_DIR

ROLE = ANSIBLE_DIR / "roles/model_bentoml"


def render(**overrides) -> str:
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    names = ("model_bentoml_port", "model_bentoml_workers", "model_bentoml_device_slots",
             "model_bentoml_device_per_item_ms", "model_bentoml_batch_max_size",
             "model_bentoml_max_latency_ms", "model_bentoml_env")
    values = {name: defaults[name] for name in names} | {
        "model_bentoml_cpus": "0", "model_bentoml_venv": "/run/lab/app/.venv-bentoml",
        "lab_address": "127.0.0.1", "lab_run_dir": "/run/lab", "lab_app_digest": "d",
        "lab_taskset": "taskset", "ansible_managed": "x",
    } | overrides
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters.update(FilterModule().filters())
    return env.from_string((ROLE / "templates/program.conf.j2").read_text()).render(values)


def program_env(text: str) -> dict[str, str]:
    line = next(line for line in text.splitlines() if line.startswith("environment="))
    return dict(re.findall(r'(\w+)="([^"]*)"', line))


def test_off_by_default_in_the_role_and_every_inventory():
    assert yaml.safe_load((ROLE / "defaults/main.yml").read_text())[
        "model_bentoml_enabled"] is False
    for path in ("inventories/single-host/group_vars/all.yml",
                 "inventories/multi-host.example/group_vars/model_api.yml"):
        assert yaml.safe_load((ANSIBLE_DIR / path).read_text())["model_bentoml_enabled"] is False


def test_the_program_runs_the_server_from_its_own_venv_pinned():
    text = render()
    command = next(line for line in text.splitlines() if line.startswith("command="))
    venv_python = f"/run/lab/app/{bentoml_model.VENV}/bin/python"
    assert command == f"command=taskset -c 0 {venv_python} -m services.bentoml_model"
    env = program_env(text)
    # Unset role variables leave the service's own defaults.
    assert not {"SCORING_LAB_WORKERS", "SCORING_LAB_DEVICE_SLOTS",
                "SCORING_LAB_MODEL_BATCH_MAX_SIZE"} & set(env)
    assert env["SCORING_LAB_PORT"] == "3000" and env["BENTOML_HOME"] == "/run/lab/bentoml"


@pytest.mark.parametrize("overrides", [
    {"model_bentoml_device_slots": 1, "model_bentoml_batch_max_size": 8,
     "model_bentoml_max_latency_ms": 500, "model_bentoml_workers": 2},
    {"model_bentoml_env": {"SCORING_LAB_CPU_BURN_PER_ITEM_S": "0.001"},
     "model_bentoml_device_per_item_ms": 2.5},
])
def test_role_variables_reach_the_service(overrides):
    settings = settings_from_env(program_env(render(**overrides)))
    assert settings.device_slots == overrides.get("model_bentoml_device_slots", 0)
    assert settings.model_batch_max_size == overrides.get("model_bentoml_batch_max_size", 32)
    assert settings.bentoml_max_latency_ms == overrides.get("model_bentoml_max_latency_ms", 1000)
    assert settings.workers == overrides.get("model_bentoml_workers")
    assert settings.device_per_item_ms == overrides.get("model_bentoml_device_per_item_ms", 0.5)
    assert settings.cpu_burn_per_item_s == float(
        overrides.get("model_bentoml_env", {}).get("SCORING_LAB_CPU_BURN_PER_ITEM_S", 0))
