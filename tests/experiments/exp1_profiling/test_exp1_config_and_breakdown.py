"""Experiment 1 without a lab: its config profiles, and the categories a profile's stacks fall in
(the rules of experiments/profiling/breakdown.py on stacks as pyinstrument records them)."""

from __future__ import annotations

import json

import pytest

from experiments.config import ConfigError
from experiments.exp1_profiling import EXPERIMENT
from experiments.exp1_profiling.breakdown import (
    classify_stack,
    combine,
    module_of,
    pyinstrument_breakdown,
)
from experiments.exp1_profiling.run import load_config

SITE = "/lab/app/.venv/lib/python3.12/site-packages"
STD = "/usr/lib/python3.12"
APP = "/var/tmp/scoring-lab/app/services"

CONFIG = EXPERIMENT.config


def frame(function: str, path: str, line: int = 1) -> str:
    return f"{function}\x00{path}\x00{line}"


THREAD = "MainThread\x00<thread>\x00140"
LOOP = [THREAD, frame("run", f"{SITE}/uvicorn/server.py"),
        frame("run", f"{STD}/asyncio/runners.py"),
        frame("_run_once", f"{STD}/asyncio/base_events.py")]
HANDLER = [*LOOP, frame("_run", f"{STD}/asyncio/events.py"),
           frame("__call__", f"{SITE}/starlette/routing.py"),
           frame("__call__", f"{APP}/profiling.py"),
           frame("predict", f"{APP}/async_app/scoring_api.py")]


def test_every_profile_of_the_config_loads_and_smoke_is_the_smallest():
    assert set(EXPERIMENT.profiles()) >= {"full", "quick", "smoke"}
    configs = {p: load_config(CONFIG, p) for p in ("full", "quick", "smoke")}
    assert configs["smoke"].planned_s < configs["quick"].planned_s <= configs["full"].planned_s
    assert configs["full"].architectures == ("sync", "async")
    assert configs["smoke"].single.repeats == 1 and configs["smoke"].window.window_s <= 5


def test_a_config_naming_an_unknown_profiler_is_refused(tmp_path):
    text = CONFIG.read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('server_profilers = ["pyinstrument", "yappi"]',
                                'server_profilers = ["cProfile"]'))
    with pytest.raises(ConfigError, match="cProfile"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown profile"):
        load_config(CONFIG, "huge")


def test_module_of_paths():
    assert module_of(f"{SITE}/httpcore/_async/connection.py") == "httpcore"
    assert module_of(f"{STD}/json/decoder.py") == "json"
    assert module_of(f"{STD}/selectors.py") == "selectors"
    assert module_of(f"{APP}/sync_app/model_api.py") == "services.sync_app.model_api"
    assert module_of(f"{APP}/payload.py") == "services.payload"


@pytest.mark.parametrize(("tail", "category"), [
    # An await inside httpcore (its pool waits on an asyncio.Event): a model API call.
    ([frame("post", f"{SITE}/httpx/_client.py"), frame("wait", f"{SITE}/httpcore/_pool.py"),
      frame("wait", f"{STD}/asyncio/locks.py"), "[await]"], "http_calls"),
    ([frame("get", f"{SITE}/redis/asyncio/client.py"), "[await]"], "redis"),
    ([frame("parse_values", f"{APP}/payload.py"), frame("loads", f"{STD}/json/__init__.py")],
     "serialization"),
    ([frame("send", f"{SITE}/starlette/responses.py")], "framework"),
    ([frame("mean_prediction", f"{APP}/aggregate.py")], "application"),
    ([frame("stop", f"{SITE}/pyinstrument/profiler.py")], "profiler"),
])
def test_a_stack_goes_to_its_deepest_specific_frame(tail, category):
    assert classify_stack([*HANDLER, *tail]) == category


def test_idle_and_prediction_stacks():
    assert classify_stack([THREAD]) == "event_loop"  # a sync worker in meinheld's C loop
    assert classify_stack([*LOOP, frame("select", f"{STD}/selectors.py")]) == "event_loop"
    model = [THREAD, frame("predict", f"{APP}/sync_app/model_api.py"),
             "sleep\x00<built-in>\x000"]
    assert classify_stack(model) == "prediction"
    # A sleep outside a model API is not a prediction.
    assert classify_stack([THREAD, frame("wait", f"{APP}/aggregate.py"),
                           "sleep\x00<built-in>\x000"]) == "application"


def test_breakdown_sums_the_sampled_time_per_category(tmp_path):
    records = [[[*HANDLER, frame("post", f"{SITE}/httpx/_client.py")], 0.090],
               [[*HANDLER, frame("get", f"{SITE}/redis/client.py")], 0.004],
               [[*LOOP, frame("select", f"{STD}/selectors.py")], 0.006]]
    path = tmp_path / "x.pyisession"
    path.write_text(json.dumps({"duration": 0.1, "frame_records": records}))
    b = pyinstrument_breakdown(path)
    assert b["seconds"]["http_calls"] == pytest.approx(0.090)
    assert b["share"]["redis"] == pytest.approx(0.04)
    assert b["share"]["event_loop"] == pytest.approx(0.06)
    both = combine([b, b])
    assert both["profiles"] == 2 and both["sampled_s"] == pytest.approx(0.1)
    assert both["share"]["http_calls"] == pytest.approx(0.9)
