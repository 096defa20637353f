"""The queue workers' program file: the command the service CLI runs for them, and an
environment the services accept, with the role's knobs, a variant's overrides of them, and the
password only inside the Redis URL."""

from __future__ import annotations

import re

import jinja2
import yaml
from ansible.plugins.filter.core import FilterModule

from services.settings import RqWorker, settings_from_env
from tests.ansible.ansible_testutil import ANSIBLE_DIR

ROLE = ANSIBLE_DIR / "roles/queue_worker"


def program(arch: str = "sync", **overrides) -> str:
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    names = ("queue_worker_env", "queue_worker_concurrency", "queue_worker_rq_worker",
             "queue_worker_sweep_s", "queue_worker_workers")
    values = {name: defaults[name] for name in names} | {
        "queue_worker_redis_url": "redis://10.0.0.1:6379/0", "queue_worker_redis_password": None,
        "queue_worker_model_urls": {"sync": "http://10.0.0.2:5000",
                                    "async": "http://10.0.0.2:8000"},
        "queue_worker_arch": arch, "queue_worker_cpus": "2-3", "lab_run_dir": "/run/lab",
        "lab_app_digest": "d", "lab_taskset": "taskset", "lab_venv_python": "python",
        "ansible_managed": "x",
    } | overrides
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
    env.filters.update(FilterModule().filters())
    return env.from_string((ROLE / "templates/program.conf.j2").read_text()).render(values)


def program_env(text: str) -> dict[str, str]:
    line = next(line for line in text.splitlines() if line.startswith("environment="))
    return dict(re.findall(r'(\w+)="([^"]*)"', line))


def test_default_program_runs_the_queue_service_pinned_with_the_role_knobs():
    for arch in ("sync", "async"):
        text = program(arch)
        assert f"[program:queue-{arch}]" in text
        assert (f"command=taskset -c 2-3 python -m services serve --role queue --arch {arch}"
                in text)
        env = program_env(text)
        assert env["SCORING_LAB_SERVICE"] == f"queue-{arch}"  # what the sampler labels
        settings = settings_from_env(env)
        assert str(settings.model_url).rstrip("/") == ("http://10.0.0.2:5000" if arch == "sync"
                                                        else "http://10.0.0.2:8000")
        assert (settings.queue_concurrency, settings.queue_sweep_s) == (16, 5)
        assert settings.rq_worker is RqWorker.SIMPLE and settings.workers is None


def test_a_variant_env_overrides_the_knobs_but_not_the_identity():
    env = program_env(program(
        queue_worker_rq_worker="fork", queue_worker_workers=3,
        queue_worker_env={"SCORING_LAB_QUEUE_SWEEP_S": "2", "SCORING_LAB_SERVICE": "other"}))
    settings = settings_from_env(env)
    assert settings.rq_worker is RqWorker.FORK and settings.workers == 3
    assert settings.queue_sweep_s == 2
    assert env["SCORING_LAB_SERVICE"] == "queue-sync"


def test_the_password_is_only_in_the_redis_url():
    text = program(queue_worker_redis_password="s3cret")
    env = program_env(text)
    assert env["SCORING_LAB_REDIS_URL"] == "redis://:s3cret@10.0.0.1:6379/0"
    assert text.count("s3cret") == 1
