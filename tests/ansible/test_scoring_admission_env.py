"""The scoring handlers' program file carries admission control's variables only when it is
on (a default deploy writes the file it wrote before), and then values the service accepts."""

from __future__ import annotations

import re

import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import FilterModule

from services import admission
from services.settings import settings_from_env
from tests.ansible.ansible_testutil import ANSIBLE_DIR

ROLE = ANSIBLE_DIR / "roles/scoring_handler"


def program_env(**overrides) -> dict[str, str]:
    """The environment= line of the rendered program file, for the sync handler."""
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    names = ("scoring_handler_env", "scoring_handler_admission_limit",
             "scoring_handler_admission_retry_after_s", "scoring_handler_admission_deadlines",
             "scoring_handler_admission_budget_s", "scoring_handler_admission_adaptive",
             "scoring_handler_admission_target_s")
    values = {name: defaults[name] for name in names} | {
        "scoring_handler_redis_url": "redis://127.0.0.1:6379/0", "scoring_handler_workers": None,
        "scoring_handler_redis_password": None,
        "scoring_handler_ports": {"sync": 5001}, "scoring_handler_arch": "sync",
        "scoring_handler_model_urls": {"sync": "http://127.0.0.1:5000"}, "lab_address": "127.0.0.1",
        "lab_run_dir": "/run/lab", "lab_app_digest": "d", "lab_taskset": "taskset",
        "scoring_handler_cpus": "0", "lab_venv_python": "python", "ansible_managed": "x",
    } | overrides
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters.update(FilterModule().filters())
    text = env.from_string((ROLE / "templates/program.conf.j2").read_text()).render(values)
    line = next(line for line in text.splitlines() if line.startswith("environment="))
    return dict(re.findall(r'(\w+)="([^"]*)"', line))


def test_default_deploy_has_no_admission_variables():
    env = program_env()
    assert not [key for key in env if "ADMISSION" in key]
    assert not admission.enabled(settings_from_env(env))


@pytest.mark.parametrize("overrides", [
    {"scoring_handler_admission_limit": 8},
    {"scoring_handler_admission_deadlines": True, "scoring_handler_admission_budget_s": 0.5},
    {"scoring_handler_admission_limit": 8, "scoring_handler_admission_adaptive": True,
     "scoring_handler_admission_target_s": 0.25},
])
def test_admission_variables_reach_the_service(overrides):
    settings = settings_from_env(program_env(**overrides))
    assert admission.enabled(settings)
    assert settings.admission_limit == overrides.get("scoring_handler_admission_limit", 0)
    assert settings.admission_deadlines == overrides.get("scoring_handler_admission_deadlines",
                                                         False)
    assert settings.admission_budget_s == overrides.get("scoring_handler_admission_budget_s", 0)
    assert settings.admission_adaptive == overrides.get("scoring_handler_admission_adaptive",
                                                        False)
    assert settings.admission_target_s == overrides.get("scoring_handler_admission_target_s",
                                                        0.5)


def test_a_variant_env_overrides_the_role_variables():
    env = program_env(scoring_handler_admission_limit=8,
                      scoring_handler_env={"SCORING_LAB_ADMISSION_LIMIT": "2"})
    assert env["SCORING_LAB_ADMISSION_LIMIT"] == "2"
