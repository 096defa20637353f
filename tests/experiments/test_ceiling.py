"""The ceiling model of experiment 4 on fixture numbers: a blocking stack bound by its workers,
an event-loop stack bound by CPU, shared and separate CPU sets, and the worker classification."""

from __future__ import annotations

import pydantic
import pytest

from experiments.analysis.ceiling import (
    ServiceInput,
    closeness,
    cpu_capacity,
    cpu_groups,
    model_calls,
    predict,
    service_slots,
    sync_worker_kind,
    worker_capacity,
    workers_in_effect,
    workers_label,
)
from services.settings import Settings, SettingsError, error_lines
from services.workers import sync_requests_per_worker


def test_littles_law_and_cpu_capacity():
    assert worker_capacity(2, 0.1) == pytest.approx(20.0)
    assert worker_capacity(2, 0.05, calls_per_request=2) == pytest.approx(20.0)
    assert cpu_capacity(1, 0.010) == pytest.approx(100.0)
    assert cpu_capacity(2, 0.010) == pytest.approx(200.0)
    with pytest.raises(ValueError):
        worker_capacity(0, 0.1)
    with pytest.raises(ValueError):
        cpu_capacity(1, 0.0)


def test_blocking_workers_bind_the_sync_stack():
    # 2 scoring workers held ~95 ms (Redis + 2 x 45 ms), 2 model workers held 46 ms per call,
    # 2 calls per request; all on core 0 with a few ms of CPU per request.
    ceiling = predict([
        ServiceInput("scoring-sync", (0,), slots=2, hold_s=0.095, cpu_s_per_request=0.002),
        ServiceInput("model-sync", (0,), slots=2, hold_s=0.046, calls_per_request=2,
                     cpu_s_per_request=0.001),
        ServiceInput("redis", (0,), cpu_s_per_request=0.0002),
    ])
    assert ceiling.binding.name == "workers:scoring-sync"
    assert ceiling.binding.kind == "workers"
    assert ceiling.predicted_rps == pytest.approx(2 / 0.095)
    caps = {s.name: s.capacity_rps for s in ceiling.stages}
    assert caps["workers:model-sync"] == pytest.approx(2 / 0.092)
    assert caps["cpu:0"] == pytest.approx(1 / 0.0032)
    assert "2 slots / (95.0 ms held)" in ceiling.sentence()


def test_model_workers_bind_when_the_scoring_handler_waits_cooperatively():
    ceiling = predict([
        ServiceInput("scoring-sync", (0,), slots=None, cpu_s_per_request=0.003),
        ServiceInput("model-sync", (0,), slots=2, hold_s=0.046, calls_per_request=2,
                     cpu_s_per_request=0.001),
    ])
    assert ceiling.binding.name == "workers:model-sync"
    assert ceiling.predicted_rps == pytest.approx(2 / 0.092)


def test_cpu_binds_the_event_loop_stack():
    # uvicorn everywhere: no worker stage; 12 + 2 + 0.3 ms of CPU per request on one core.
    ceiling = predict([
        ServiceInput("scoring-async", (0,), cpu_s_per_request=0.012),
        ServiceInput("model-async", (0,), cpu_s_per_request=0.002),
        ServiceInput("redis", (0,), cpu_s_per_request=0.0003),
    ])
    assert [s.kind for s in ceiling.stages] == ["cpu"]
    assert ceiling.binding.name == "cpu:0"
    assert ceiling.predicted_rps == pytest.approx(1 / 0.0143)


def test_cpu_binds_a_blocking_stack_with_many_workers():
    ceiling = predict([
        ServiceInput("scoring-sync", (0,), slots=64, hold_s=0.1, cpu_s_per_request=0.02),
        ServiceInput("model-sync", (0,), slots=64, hold_s=0.05, calls_per_request=2,
                     cpu_s_per_request=0.01),
    ])
    assert ceiling.binding.kind == "cpu"
    assert ceiling.predicted_rps == pytest.approx(1 / 0.03)


def test_separate_cpu_sets_are_separate_stages():
    assert cpu_groups([(0, 1), (2,), (1,), (3, 4), (4, 5)]) == [
        frozenset({0, 1}), frozenset({2}), frozenset({3, 4, 5})]
    ceiling = predict([
        ServiceInput("scoring-async", (2, 3), cpu_s_per_request=0.010),
        ServiceInput("model-async", (0, 1), cpu_s_per_request=0.004),
        ServiceInput("redis", (0, 1), cpu_s_per_request=0.001),
    ])
    caps = {s.name: s.capacity_rps for s in ceiling.stages}
    assert caps == {"cpu:2,3": pytest.approx(200.0), "cpu:0,1": pytest.approx(400.0)}
    assert ceiling.binding.name == "cpu:2,3"


def test_missing_measurements_are_noted_not_invented():
    ceiling = predict([ServiceInput("scoring-sync", (0,), slots=2, hold_s=None)])
    assert ceiling.predicted_rps is None and ceiling.binding is None
    assert any("no measured hold time" in n for n in ceiling.notes)
    assert "no prediction" in ceiling.sentence()
    assert ceiling.to_dict()["binding"] is None


def test_service_slots_follow_the_worker_configuration():
    assert service_slots("scoring", "async", 2, {}) is None
    assert service_slots("scoring", "sync", 2, {}) == 2
    assert service_slots("model", "sync", 2, {"SCORING_LAB_SYNC_WORKER": "sync"}) == 2
    assert service_slots("scoring", "sync", 2, {"SCORING_LAB_SYNC_WORKER": "gthread"}) == 8
    assert service_slots("scoring", "sync", 2, {"SCORING_LAB_SYNC_WORKER": "gthread",
                                                "SCORING_LAB_GTHREAD_THREADS": "3"}) == 6
    # The patch makes the scoring handler's sockets cooperative; the model's sleep still blocks.
    assert service_slots("scoring", "sync", 2, {"SCORING_LAB_MEINHELD_PATCH": "true"}) is None
    assert service_slots("model", "sync", 2, {"SCORING_LAB_MEINHELD_PATCH": "true"}) == 2


def test_gevent_slots_are_its_connections_per_worker_in_both_roles():
    # gevent patches sockets and time.sleep: the model API's wait is cooperative as well.
    for role in ("scoring", "model"):
        assert service_slots(role, "sync", 2, {"SCORING_LAB_SYNC_WORKER": "gevent"}) == 2000
        assert service_slots(role, "sync", 3, {"SCORING_LAB_SYNC_WORKER": "gevent",
                                               "SCORING_LAB_GEVENT_CONNECTIONS": "50"}) == 150
    # The count comes from the services' own rule, not a copy of it.
    gevent = Settings(sync_worker="gevent", gevent_connections=50)
    assert service_slots("model", "sync", 1, {"SCORING_LAB_SYNC_WORKER": "gevent",
                                              "SCORING_LAB_GEVENT_CONNECTIONS": "50"}) == (
        sync_requests_per_worker(gevent))


def test_granian_slots_are_its_blocking_threads_per_worker_in_both_roles():
    # granian runs Flask in blocking threads: each holds one request, whatever the worker
    # class says (granian has none; the setting's default is meinheld).
    granian = {"SCORING_LAB_SERVER": "granian", "SCORING_LAB_GRANIAN_BLOCKING_THREADS": "32"}
    for role in ("scoring", "model"):
        assert service_slots(role, "sync", 2, granian) == 64
    assert service_slots("scoring", "sync", 2, {"SCORING_LAB_SERVER": "granian"}) == 2 * (
        Settings().granian_blocking_threads)
    assert service_slots("scoring", "async", 1, granian) is None  # an event loop on ASGI


def test_what_runs_a_sync_service_is_recorded_and_printed_from_its_env():
    assert sync_worker_kind(Settings()) == {"worker_class": "meinheld"}
    assert sync_worker_kind(Settings(sync_worker="gthread", gthread_threads=8)) == {
        "worker_class": "gthread", "threads": 8}
    assert sync_worker_kind(Settings(server="granian", granian_blocking_threads=32)) == {
        "worker_class": "granian", "threads": 32}
    # a run recorded before granian was told apart: its worker class says meinheld, its env
    # says granian; the label follows the env
    recorded = {"workers": 2, "worker_class": "meinheld",
                "env": {"SCORING_LAB_SERVER": "granian",
                        "SCORING_LAB_GRANIAN_BLOCKING_THREADS": "32"}}
    assert workers_label("scoring-sync", recorded) == "scoring-sync 2x32 granian"
    assert workers_label("scoring-sync", {"workers": 2, "worker_class": "gthread",
                                          "threads": 32}) == "scoring-sync 2x32 gthread"
    assert workers_label("scoring-async", {"workers": 1, "env": {}}) == "scoring-async 1"


def test_a_variant_env_reads_as_the_services_read_it(monkeypatch):
    # The analysing process's own environment plays no part.
    monkeypatch.setenv("SCORING_LAB_SYNC_WORKER", "gevent")
    assert service_slots("scoring", "sync", 2, {}) == 2
    # Names without case, as the env source; other variables ignored.
    assert service_slots("scoring", "sync", 2, {"scoring_lab_sync_worker": "gthread",
                                                "PATH": "/bin"}) == 8


@pytest.mark.parametrize(("env", "named"), [
    ({"SCORING_LAB_GEVENT_CONNECTIONS": "0"}, "SCORING_LAB_GEVENT_CONNECTIONS='0'"),
    ({"SCORING_LAB_SYNC_WORKER": "GThread"}, "SCORING_LAB_SYNC_WORKER='GThread'"),
    ({"SCORING_LAB_GTHREAD_THREADS": "many"}, "SCORING_LAB_GTHREAD_THREADS='many'"),
    ({"SCORING_LAB_SYNC_WORKER": "gevent", "SCORING_LAB_MEINHELD_PATCH": "true"},
     "SCORING_LAB_MEINHELD_PATCH=true needs the meinheld worker"),
])
def test_a_bad_env_value_is_the_services_error(env, named):
    # The same lines `python -m services` prints before it refuses to start.
    with pytest.raises(SettingsError) as caught:
        service_slots("scoring", "sync", 2, env)
    with pytest.raises(pydantic.ValidationError) as seen:
        Settings(**{k.removeprefix("SCORING_LAB_").lower(): v for k, v in env.items()})
    assert caught.value.lines == error_lines(seen.value)
    assert named in str(caught.value)
    # An async service with the same env would refuse it too: checked, not skipped.
    with pytest.raises(SettingsError):
        service_slots("model", "async", 2, env)


def test_workers_in_effect_follow_the_services_auto_rule():
    assert workers_in_effect("sync", 1, None) == 2
    assert workers_in_effect("sync", 3, None) == 6
    assert workers_in_effect("async", 1, None) == 2
    assert workers_in_effect("async", 4, None) == 4
    assert workers_in_effect("sync", 1, 7) == 7


def test_closeness():
    assert closeness(18.0, 20.0) == pytest.approx(0.9)
    assert closeness(None, 20.0) is None
    assert closeness(10.0, None) is None
    assert closeness(float("nan"), 20.0) is None


# ------------------------------------------------------------------ a CPU-bound model API
# SCORING_LAB_CPU_BURN_S = 10 ms per prediction, two predictions per scoring request: the model
# API spends 2 x 10 ms (+ 0.5 ms of its own) of CPU per scoring request.
BURN_S = 0.010
MODEL_CALLS_PER_REQUEST = model_calls({})  # the services' default: the original's 2
MODEL_CPU_S = MODEL_CALLS_PER_REQUEST * BURN_S + 0.0005


@pytest.mark.parametrize("arch", ["sync", "async"])
def test_a_cpu_bound_model_on_its_own_core_is_the_limit(arch):
    # Sync with enough slots (gthread 2 x 32) that no worker stage binds; async: event loops.
    slots = service_slots("scoring", arch, 2, {"SCORING_LAB_SYNC_WORKER": "gthread",
                                               "SCORING_LAB_GTHREAD_THREADS": "32"})
    model_slots = service_slots("model", arch, 2, {"SCORING_LAB_SYNC_WORKER": "gthread",
                                                   "SCORING_LAB_GTHREAD_THREADS": "32"})
    ceiling = predict([
        ServiceInput(f"scoring-{arch}", (0,), slots=slots, hold_s=0.120,
                     cpu_s_per_request=0.004, processes=2),
        ServiceInput(f"model-{arch}", (1,), slots=model_slots, hold_s=0.056,
                     calls_per_request=MODEL_CALLS_PER_REQUEST, cpu_s_per_request=MODEL_CPU_S,
                     processes=2),
        ServiceInput("redis", (0,), cpu_s_per_request=0.0003, processes=1),
    ])
    assert ceiling.binding.kind == "cpu"
    assert ceiling.binding.name == "cpu:1" and ceiling.binding.services == (f"model-{arch}",)
    # cores / (CPU per call x calls)
    assert ceiling.predicted_rps == pytest.approx(1 / (MODEL_CALLS_PER_REQUEST * BURN_S + 0.0005))
    assert f"model-{arch} 20.50 ms CPU per request" in ceiling.sentence()


@pytest.mark.parametrize("arch", ["sync", "async"])
def test_a_cpu_bound_model_sharing_the_core_is_named_first(arch):
    # The default single-host deploy: every service on core 0.
    ceiling = predict([
        ServiceInput(f"scoring-{arch}", (0,), slots=None, cpu_s_per_request=0.004),
        ServiceInput(f"model-{arch}", (0,), slots=None, cpu_s_per_request=MODEL_CPU_S),
        ServiceInput("redis", (0,), cpu_s_per_request=0.0003),
    ])
    assert ceiling.binding.name == "cpu:0"
    assert ceiling.binding.services == (f"model-{arch}", f"scoring-{arch}", "redis")
    assert ceiling.predicted_rps == pytest.approx(1 / (0.004 + MODEL_CPU_S + 0.0003))


@pytest.mark.parametrize("arch", ["sync", "async"])
def test_a_cpu_bound_model_with_fewer_processes_than_cores_uses_one_core_each(arch):
    # One worker process on two cores: the burn runs on one of them, so the model saturates at
    # 1 / CPU per request, not 2 / (the old model counted every core of the set).
    ceiling = predict([
        ServiceInput(f"scoring-{arch}", (0,), cpu_s_per_request=0.004),
        ServiceInput(f"model-{arch}", (1, 2), slots=None,
                     calls_per_request=MODEL_CALLS_PER_REQUEST, cpu_s_per_request=MODEL_CPU_S,
                     processes=1),
    ])
    assert ceiling.binding.name == f"cpu:model-{arch}"
    assert ceiling.predicted_rps == pytest.approx(1 / MODEL_CPU_S)
    caps = {s.name: s.capacity_rps for s in ceiling.stages}
    assert caps["cpu:1,2"] == pytest.approx(2 / MODEL_CPU_S)
    # As many processes as cores: no separate limit.
    ceiling = predict([ServiceInput(f"model-{arch}", (1, 2), cpu_s_per_request=MODEL_CPU_S,
                                    processes=2)])
    assert [s.name for s in ceiling.stages] == ["cpu:1,2"]


def test_sync_worker_slots_bind_before_the_cpu_bound_model():
    # meinheld's default 2 workers a service, each held for the whole call: the burn lengthens
    # the hold (10 ms burn + 45 ms sleep a call), so the blocking workers saturate at
    # ~18 req/s while the model's core would allow 1 / 20.5 ms = ~49 req/s.
    env: dict[str, str] = {}
    ceiling = predict([
        ServiceInput("scoring-sync", (0,), slots=service_slots("scoring", "sync", 2, env),
                     hold_s=0.1125, cpu_s_per_request=0.002, processes=2),
        ServiceInput("model-sync", (1,), slots=service_slots("model", "sync", 2, env),
                     hold_s=0.055, calls_per_request=MODEL_CALLS_PER_REQUEST,
                     cpu_s_per_request=MODEL_CPU_S, processes=2),
    ])
    caps = {s.name: s.capacity_rps for s in ceiling.stages}
    assert ceiling.binding.name == "workers:scoring-sync"
    assert ceiling.predicted_rps == pytest.approx(2 / 0.1125)
    assert caps["workers:model-sync"] == pytest.approx(2 / (0.055 * 2))
    assert caps["cpu:1"] == pytest.approx(1 / MODEL_CPU_S)
    assert ceiling.predicted_rps < caps["cpu:1"] / 2


def test_a_report_of_a_run_whose_recorded_env_the_services_refuse_is_one_line(tmp_path, capsys):
    # The committed experiment 4 run, its gthread variant's recorded env made invalid.
    import shutil

    from experiments.cli import main
    from experiments.constants import REPO_ROOT

    committed = REPO_ROOT / "results" / "20261126T024223Z_experiment-4_single-localhost_f0c71572"
    if not committed.is_dir():
        pytest.skip("the committed experiment 4 run is not in this checkout")
    run = tmp_path / committed.name
    shutil.copytree(committed, run)
    manifest = run / "manifest.json"
    text = manifest.read_text()
    assert '"SCORING_LAB_SYNC_WORKER": "gthread"' in text
    manifest.write_text(text.replace('"SCORING_LAB_SYNC_WORKER": "gthread"',
                                     '"SCORING_LAB_SYNC_WORKER": "GThread"'))
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: SCORING_LAB_SYNC_WORKER='GThread': Input should be"), err
    assert "Traceback" not in err


def test_model_calls_per_request_are_read_as_the_scoring_handler_reads_them():
    assert model_calls({}) == 2 == Settings().model_calls
    assert model_calls({"SCORING_LAB_MODEL_CALLS": "8", "SCORING_LAB_HTTP_CLIENT": "aiohttp"}) == 8
    with pytest.raises(SettingsError, match="SCORING_LAB_MODEL_CALLS='0'"):
        model_calls({"SCORING_LAB_MODEL_CALLS": "0"})
    # a blocking model stage sees every call: 8 calls of 50 ms on 4 slots
    slots = service_slots("model", "sync", 4, {})
    ceiling = predict([ServiceInput("model-sync", (0,), slots=slots, hold_s=0.050,
                                    calls_per_request=model_calls(
                                        {"SCORING_LAB_MODEL_CALLS": "8"}))])
    assert ceiling.predicted_rps == pytest.approx(4 / (0.050 * 8))
