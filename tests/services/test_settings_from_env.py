"""settings_from_env: a recorded env mapping gives the settings (and the errors) a service started
with that environment would have, whatever the analysing process's own environment holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from services.settings import ENV_PREFIX, Settings, SettingsError, error_lines, settings_from_env

ROOT = Path(__file__).resolve().parents[2]

GOOD = [
    {},
    {"SCORING_LAB_SYNC_WORKER": "gevent", "SCORING_LAB_GEVENT_CONNECTIONS": "64"},
    {"SCORING_LAB_SYNC_WORKER": "gthread", "SCORING_LAB_GTHREAD_THREADS": "8",
     "SCORING_LAB_WORKERS": "3"},
    {"scoring_lab_meinheld_patch": "True", "SCORING_LAB_CPU_BURN_S": "0.005",
     "SCORING_LAB_MODEL_URL": "http://198.18.0.12:5000/", "SCORING_LAB_HTTP_CLIENT": "aiohttp"},
    {"SCORING_LAB_HTTP_CLIENT": "aiohttp", "SCORING_LAB_REDIS_PARSER": "hiredis"},
]
BAD = [
    {"SCORING_LAB_GEVENT_CONNECTIONS": "0"},
    {"SCORING_LAB_SYNC_WORKER": "GThread"},  # enum values are case-sensitive in the services too
    {"SCORING_LAB_WORKERS": "two", "SCORING_LAB_CPU_BURN_S": "-1"},
    {"SCORING_LAB_SYNC_WORKER": "gevent", "SCORING_LAB_MEINHELD_PATCH": "true"},
    {"SCORING_LAB_REDIS_PARSER": "cython"},
]


def _service_view(monkeypatch, env: dict[str, str]) -> Settings:
    """What Settings() reads when env is the whole SCORING_LAB_* environment."""
    for key in os.environ:
        if key.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


@pytest.mark.parametrize("env", GOOD)
def test_the_same_settings_as_the_env_source(monkeypatch, env):
    assert settings_from_env(env) == _service_view(monkeypatch, env)


@pytest.mark.parametrize("env", BAD)
def test_the_same_errors_as_the_env_source(monkeypatch, env):
    with pytest.raises(pydantic.ValidationError) as seen:
        _service_view(monkeypatch, env)
    with pytest.raises(SettingsError) as caught:
        settings_from_env(env)
    assert caught.value.lines == error_lines(seen.value)
    assert all("Value error," not in line for line in caught.value.lines)


def test_the_callers_own_environment_plays_no_part(monkeypatch):
    monkeypatch.setenv("SCORING_LAB_GTHREAD_THREADS", "0")  # invalid, and not in the mapping
    monkeypatch.setenv("SCORING_LAB_SYNC_WORKER", "gevent")
    settings = settings_from_env({"SCORING_LAB_SYNC_WORKER": "gthread", "PATH": "/bin",
                                  "SCORING_LAB_WORKERS": None})
    assert (settings.sync_worker, settings.gthread_threads, settings.workers) == (
        "gthread", 4, None)


def test_non_string_values_read_as_an_environment_would_hold_them():
    settings = settings_from_env({"SCORING_LAB_GTHREAD_THREADS": 6,
                                  "SCORING_LAB_MEINHELD_PATCH": True})
    assert (settings.gthread_threads, settings.meinheld_patch) == (6, True)


def test_the_service_cli_prints_the_same_lines():
    env = {"SCORING_LAB_WORKERS": "two", "SCORING_LAB_GEVENT_CONNECTIONS": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "services", "seed"], cwd=ROOT, capture_output=True, text=True,
        timeout=60, env={"PATH": "/usr/bin:/bin", **env})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    with pytest.raises(SettingsError) as caught:
        settings_from_env(env)
    assert result.stderr.splitlines() == [f"error: {line}" for line in caught.value.lines]
    assert len(caught.value.lines) == 2
