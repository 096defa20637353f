"""Experiment 1 without a lab: its config profiles, and the categories a profile's stacks fall in
(the rules of experiments/profiling/breakdown.py on stacks as pyinstrument records them)."""

from __future__ import annotations

import gzip
import json

import pytest

from experiments.config import ConfigError
from experiments.exp1_profiling import EXPERIMENT
from experiments.exp1_profiling.breakdown import (
    CPU_CATEGORIES,
    IDLE,
    classify_stack,
    combine,
    cpu_breakdown,
    cpu_category,
    cpu_per_request,
    module_of,
    pyinstrument_breakdown,
    session_file,
)
from experiments.exp1_profiling.report import _cpu_lines, contended, load_cpu_lines
from experiments.exp1_profiling.run import load_config
from experiments.lab.collect import compress_sessions

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


def test_builds_profiled_under_load_are_validated_like_the_services_settings(tmp_path):
    quick = load_config(CONFIG, "quick")
    assert [(b.name, b.archs, b.users) for b in quick.builds] == [
        ("default", ("async",), (150,)), ("aiohttp", ("async",), (20, 150))]
    assert quick.builds[1].deploy_vars()["scoring_handler_env"] == {
        "SCORING_LAB_PROFILING": "true", "SCORING_LAB_HTTP_CLIENT": "aiohttp"}
    # each build window is planned: three more windows than without builds
    assert quick.planned_s == pytest.approx(
        (2 * len(quick.window.profilers) + 3) * quick.window_load_s)
    # a heavier load starts within the lead time, a small one at the window's own rate
    assert quick.window_scenario("pyinstrument", 150, "aiohttp").spawn_rate == pytest.approx(
        150 / quick.window.lead_s)
    assert quick.window_scenario("pyinstrument").name == "window_pyinstrument"
    assert quick.window_scenario("pyinstrument", 20, "aiohttp").name == (
        "window_pyinstrument_aiohttp_20u")
    text = CONFIG.read_text()
    for old, new, match in [
            ('SCORING_LAB_HTTP_CLIENT = "aiohttp" }\n\n[deploy]',
             'SCORING_LAB_HTTP_CLIENT = "curl" }\n\n[deploy]', "SCORING_LAB_HTTP_CLIENT='curl'"),
            ('SCORING_LAB_HTTP_CLIENT = "aiohttp" }\n\n[deploy]',
             'SCORING_LAB_PROFILING = "false" }\n\n[deploy]', "SCORING_LAB_PROFILING"),
            ('users = [20, 150]', 'users = [0]', "user counts >= 1"),
            ('name = "aiohttp"\ndescription', 'name = "default"\ndescription',
             "build names repeat")]:
        assert old in text, old
        bad = tmp_path / "bad.toml"
        bad.write_text(text.replace(old, new, 1))
        with pytest.raises(ConfigError, match=match):
            load_config(bad, "quick")


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


# ------------------------------------------------------------------ CPU per request
EPOLL = "epoll.poll\x00<built-in>\x000"


@pytest.mark.parametrize(("stack", "category"), [
    ([*LOOP, frame("select", f"{STD}/selectors.py"), EPOLL], IDLE),  # the loop's wait
    ([*LOOP, EPOLL], IDLE),
    ([THREAD], IDLE),  # a sync worker in meinheld's C loop
    ([THREAD, frame("run", f"{SITE}/meinheld/server.py")], IDLE),
    # asyncio's own work is the server's CPU, not idle (classify_stack calls it event_loop).
    (LOOP, "server"),
    ([*LOOP, frame("_read_ready", f"{STD}/asyncio/selector_events.py"),
      "socket.recv\x00<built-in>\x000"], "server"),
    ([*LOOP, frame("data_received", f"{SITE}/uvicorn/protocols/http/httptools_impl.py")],
     "server"),
    ([*HANDLER[:-2], frame("solve_dependencies", f"{SITE}/fastapi/dependencies/utils.py"),
      frame("validate_python", f"{SITE}/pydantic/type_adapter.py")], "framework"),
    ([*HANDLER, frame("post", f"{SITE}/httpx/_client.py")], "http_client"),
    ([*HANDLER, frame("get", f"{SITE}/redis/asyncio/client.py")], "redis"),
    ([*HANDLER, frame("dumps", f"{STD}/json/__init__.py")], "serialization"),
    ([THREAD, frame("predict", f"{APP}/sync_app/model_api.py"), "sleep\x00<built-in>\x000"],
     IDLE),  # the fake model's sleep is a wait
    ([THREAD, frame("predict", f"{APP}/sync_app/model_api.py"),
      frame("burn_cpu", f"{APP}/fake_model.py")], "prediction"),
])
def test_cpu_categories_of_stacks(stack, category):
    assert cpu_category(stack) == category


def _session(path, records, cpu_time):
    doc = {"duration": sum(t for _, t in records), "frame_records": records}
    if cpu_time is not None:
        doc["cpu_time"] = cpu_time
    path.write_text(json.dumps(doc))
    return path


def test_a_result_folder_keeps_sessions_gzipped_and_the_report_reads_them(tmp_path):
    records = [[[*HANDLER, frame("post", f"{SITE}/httpx/_client.py")], 0.004],
               [[*LOOP, EPOLL], 1.0]] * 200
    host = tmp_path / "profiles" / "localhost"
    host.mkdir(parents=True)
    plain = _session(host / "scoring-async_1_win_pyinstrument.pyisession", records, 0.5)
    before = (pyinstrument_breakdown(plain), cpu_breakdown(plain), plain.stat().st_size)
    (host / "scoring-async_1_win_pyinstrument.html").write_text("<html/>")
    assert compress_sessions(tmp_path / "profiles") == [host / f"{plain.name}.gz"]
    assert not plain.exists() and (host / "scoring-async_1_win_pyinstrument.html").exists()
    packed = session_file(host, "scoring-async_1_win_pyinstrument")
    assert packed.name.endswith(".pyisession.gz") and packed.stat().st_size < before[2] / 5
    assert (pyinstrument_breakdown(packed), cpu_breakdown(packed)) == before[:2]
    # the same session gives the same bytes (no time in the header): a re-collected run
    # does not show as changed
    first = packed.read_bytes()
    (host / plain.name).write_bytes(gzip.decompress(first))
    compress_sessions(host)
    assert packed.read_bytes() == first


def test_cpu_per_request_scales_busy_samples_to_the_measured_cpu(tmp_path):
    # Two workers of an async scoring handler; 6 ms of busy samples each, mostly httpx, and
    # 1 s of waiting in epoll that must not count.
    records = [[[*HANDLER, frame("post", f"{SITE}/httpx/_client.py")], 0.004],
               [[*HANDLER, frame("get", f"{SITE}/redis/asyncio/client.py")], 0.001],
               [[*LOOP, frame("data_received", f"{SITE}/uvicorn/protocols/http/h.py")], 0.0005],
               [[*HANDLER, frame("dumps", f"{STD}/json/__init__.py")], 0.0005],
               [[*LOOP, frame("select", f"{STD}/selectors.py"), EPOLL], 1.0]]
    # Worker a measured exactly its busy time; worker b measured less (its busy samples'
    # wall included waiting for a shared core).
    a = cpu_breakdown(_session(tmp_path / "a.pyisession", records, 0.006))
    b = cpu_breakdown(_session(tmp_path / "b.pyisession", records, 0.0048))
    assert a["idle_wall_s"] == pytest.approx(1.0) and a["busy_wall_s"] == pytest.approx(0.006)
    cpu = cpu_per_request([a, b], requests=4)
    assert cpu["method"] == "cpu_time" and cpu["split_trusted"]
    assert cpu["scale"] == pytest.approx(0.0108 / 0.012)
    assert cpu["total_ms"] == pytest.approx(0.0108 / 4 * 1000)  # 2.7 ms
    ms = cpu["ms_per_request"]
    assert ms["http_client"] == pytest.approx(0.008 * 0.9 / 4 * 1000)  # 1.8 ms
    assert ms["redis"] == pytest.approx(0.45) and ms["server"] == pytest.approx(0.225)
    assert ms["serialization"] == pytest.approx(0.225)
    assert sum(ms.values()) == pytest.approx(cpu["total_ms"])
    assert set(ms) == set(CPU_CATEGORIES)  # idle is not a CPU category
    lines = "\n".join(_cpu_lines({"scoring": {"cpu_per_request": cpu}}))
    assert "| HTTP client (httpx, aiohttp; requests, urllib3) | 1.80 |" in lines
    assert "**2.70**" in lines and "`cpu_time`" in lines


def test_samples_that_miss_the_measured_cpu_give_the_total_only(tmp_path):
    records = [[[*HANDLER, frame("post", f"{SITE}/httpx/_client.py")], 0.001],
               [[*LOOP, EPOLL], 1.0]]
    few = cpu_breakdown(_session(tmp_path / "few.pyisession", records, 0.010))
    cpu = cpu_per_request([few], requests=5)
    assert cpu["scale"] == pytest.approx(10.0) and not cpu["split_trusted"]
    assert cpu["total_ms"] == pytest.approx(2.0)
    lines = _cpu_lines({"model": {"cpu_per_request": cpu}})
    assert "| HTTP client (httpx, aiohttp; requests, urllib3) | - |" not in lines
    assert any("**2.00**" in line for line in lines)
    assert "only the total is given" in lines[-1]
    # No measured CPU: busy wall counts as CPU, and says so.
    bare = cpu_breakdown(_session(tmp_path / "bare.pyisession", records, None))
    cpu = cpu_per_request([bare], requests=1)
    assert cpu["method"] == "busy_wall" and cpu["total_ms"] == pytest.approx(1.0)
    assert cpu_per_request([bare], requests=0) is None


def test_the_load_table_splits_a_saturated_async_handler_by_its_busy_samples(tmp_path):
    # On a saturated core the busy samples hold run-queue waits too: 10 ms of busy samples
    # for 4 ms of measured CPU (scale 0.4). async: the split is the measured CPU in the
    # samples' proportions, marked "≈"; sync: its busy samples include its socket reads, "-".
    records = [[[*HANDLER, frame("post", f"{SITE}/httpx/_client.py")], 0.008],
               [[*HANDLER, frame("get", f"{SITE}/redis/asyncio/client.py")], 0.002],
               [[*LOOP, EPOLL], 1.0]]
    busy = cpu_breakdown(_session(tmp_path / "busy.pyisession", records, 0.004))
    cpu = cpu_per_request([busy], requests=1)
    assert cpu["scale"] == pytest.approx(0.4) and not cpu["split_trusted"]
    assert contended("async", cpu) and not contended("sync", cpu)
    windows = [{"profiler": "pyinstrument", "build": "default", "window_s": 5.0,
                "users": 150, "services": {"scoring": {"requests": 1, "cpu_per_request": cpu}}}]
    numbers = {"architectures": {arch: {"windows": windows} for arch in ("sync", "async")}}
    rows = {line.split(" | ")[1]: line for line in load_cpu_lines(numbers)
            if line.startswith("| default |")}
    assert rows["async"].startswith("| default | async | 150 | 0 | ≈3.20 | ≈0.80 |")
    assert rows["sync"].startswith("| default | sync | 150 | 0 | - | - |")
    assert "**4.00**" in rows["async"] and "**4.00**" in rows["sync"]


def test_a_real_pyinstrument_session_of_an_event_loop(tmp_path):
    # A bounded asyncio run: 4 x 50 ms of waiting in the loop, JSON work between the waits.
    import asyncio

    from pyinstrument import Profiler

    payload = [{"values": list(range(50)), "entity": str(i)} for i in range(400)]

    async def serve() -> None:
        for _ in range(4):
            await asyncio.sleep(0.05)
            for _ in range(10):
                json.loads(json.dumps(payload))

    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    asyncio.run(serve())
    session = profiler.stop()
    path = tmp_path / "real.pyisession"
    session.save(str(path))
    b = cpu_breakdown(path)
    assert b["cpu_s"] is not None and b["cpu_s"] > 0  # the session measures its CPU
    assert b["idle_wall_s"] >= 0.15  # the sleeps: waiting, not CPU
    assert b["wall_s"]["serialization"] > 0.5 * b["busy_wall_s"]
    cpu = cpu_per_request([b], requests=4)
    assert cpu["total_ms"] == pytest.approx(b["cpu_s"] / 4 * 1000)
    assert max(cpu["ms_per_request"], key=cpu["ms_per_request"].get) == "serialization"
