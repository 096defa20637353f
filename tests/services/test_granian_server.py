"""Granian as the server of both architectures (SCORING_LAB_SERVER=granian): its options from
the settings (no server), the combinations refused at startup, then the real servers: Flask on
granian's WSGI interface and FastAPI on its ASGI interface, model API and scoring handler, with
real Redis, as ``python -m services serve`` starts them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from services import profiling
from services.apps import FACTORIES
from services.granian_server import GRACEFUL_S, granian_options, startup_error
from services.settings import Arch, Role, Settings
from tests.conftest import ROOT, free_port, start_service, stop, wait_until

BODY = b"[5.1,3.5,1.4,0.2]"
GRANIAN = {"SCORING_LAB_SERVER": "granian", "SCORING_LAB_WORKERS": "2"}


# ------------------------------------------------------------------------ settings, no server


def test_flask_runs_on_wsgi_with_its_blocking_threads_fastapi_on_asgi():
    settings = Settings(server="granian", workers=3, granian_blocking_threads=8, port=1234)
    sync = granian_options(Role.SCORING, Arch.SYNC, settings)
    assert (str(sync["interface"]), sync["blocking_threads"], sync["workers"]) == ("wsgi", 8, 3)
    assert sync["target"] == "services.sync_app.scoring_api:create_app" and sync["factory"]
    assert (sync["address"], sync["port"]) == ("127.0.0.1", 1234)
    model = granian_options(Role.MODEL, Arch.ASYNC, settings)
    assert (str(model["interface"]), model["blocking_threads"]) == ("asgi", 1)
    assert model["target"] == FACTORIES[(Role.MODEL, Arch.ASYNC)] and model["factory"]
    assert str(model["loop"]) == "uvloop"
    # pyinstrument's async mode needs asyncio's own loop, as on uvicorn
    profiled = Settings(server="granian", profiling=True, run_dir="/tmp")
    assert str(granian_options(Role.MODEL, Arch.ASYNC, profiled)["loop"]) == "asyncio"
    assert startup_error(Arch.ASYNC, profiled) is None
    assert model["workers_kill_timeout"] == GRACEFUL_S and model["respawn_failed_workers"]


def test_the_labs_head_limits_become_granians_http1_settings():
    http1 = granian_options(Role.MODEL, Arch.SYNC, Settings(
        request_timeout_s=2.5, max_header_bytes=20_000))["http1_settings"]
    assert (http1.header_read_timeout, http1.max_buffer_size, http1.keep_alive) == (
        2500, 20_000, True)
    # below hyper's floor, granian gets the floor (a smaller buffer is refused)
    assert granian_options(Role.MODEL, Arch.SYNC, Settings(max_header_bytes=2048))[
        "http1_settings"].max_buffer_size == 8192


@pytest.mark.parametrize(("arch", "env", "named"), [
    (Arch.SYNC, {"meinheld_patch": True}, "SCORING_LAB_MEINHELD_PATCH=true"),
    (Arch.SYNC, {"sync_worker": "gthread"}, "SCORING_LAB_SYNC_WORKER=gthread"),
    (Arch.ASYNC, {"uvicorn_http": "h11"}, "SCORING_LAB_UVICORN_HTTP=h11"),
    (Arch.ASYNC, {"uvicorn_loop": "asyncio"}, "SCORING_LAB_UVICORN_LOOP=asyncio"),
    (Arch.SYNC, {"profiling": True, "run_dir": "/tmp"}, "SCORING_LAB_PROFILING=true"),
])
def test_what_granian_cannot_run_is_named(arch, env, named):
    reason = startup_error(arch, Settings(server="granian", **env))
    assert reason is not None and reason.startswith(named)
    assert startup_error(arch, Settings(server="granian")) is None


@pytest.mark.parametrize(("env", "named"), [
    ({"SCORING_LAB_MEINHELD_PATCH": "true"}, "SCORING_LAB_MEINHELD_PATCH=true"),
    ({"SCORING_LAB_SYNC_WORKER": "gevent"}, "SCORING_LAB_SYNC_WORKER=gevent"),
])
def test_a_refused_combination_is_one_line_not_a_traceback(env, named):
    result = subprocess.run(
        [sys.executable, "-m", "services", "serve", "--role", "scoring", "--arch", "sync"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={"PATH": "/usr/bin:/bin", "SCORING_LAB_SERVER": "granian", **env},
    )
    assert result.returncode == 2
    assert named in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------ real servers


def request(port: int, path: str, body: bytes | None = BODY,
            content_type: str = "application/json"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                 method="POST" if body is not None else "GET",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


def raw(port: int, data: bytes, wait_s: float = 5.0) -> tuple[bytes, float]:
    """What the server sends back to ``data`` until it closes (or ``wait_s``), and when."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        started = time.monotonic()
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            out += b"<still open>"
        return out, time.monotonic() - started


@pytest.fixture(scope="module", params=["sync", "async"])
def granian_stack(request, seeded_redis, tmp_path_factory):
    """Model API (on a one-slot device) and scoring handler (admission control on, a bound no
    test reaches) of one architecture on granian."""
    arch = request.param
    logs = tmp_path_factory.mktemp(f"granian-{arch}")
    ports = {"model": free_port(), "scoring": free_port()}
    started = {}
    try:
        started["model"] = start_service("model", arch, ports["model"], {
            **GRANIAN, "SCORING_LAB_DEVICE_SLOTS": "1", "SCORING_LAB_REQUEST_TIMEOUT_S": "1",
        }, logs / "model.log")
        started["scoring"] = start_service("scoring", arch, ports["scoring"], {
            **GRANIAN, "SCORING_LAB_REDIS_URL": seeded_redis.url,
            "SCORING_LAB_MODEL_URL": f"http://127.0.0.1:{ports['model']}",
            "SCORING_LAB_ADMISSION_LIMIT": "100",
        }, logs / "scoring.log")
        yield arch, ports, started, logs
    finally:
        for process in started.values():
            stop(process)


slow = pytest.mark.slow


@slow
def test_both_roles_answer_the_seeds_interface_on_granian(granian_stack):
    arch, ports, _, _ = granian_stack
    status, headers, body = request(ports["scoring"], f"/api/v1/ml/{arch}/predict")
    assert status == 200 and set(body) == {"detail"} and 0.040 <= body["detail"] <= 0.050
    assert headers["Server"] == "granian"  # what served it, not the default server
    status, _, body = request(ports["model"], f"/api/v1/ml/{arch}/predict")
    assert status == 200 and 0.040 <= body["detail"] <= 0.050 and body["batch_size"] == 1
    status, _, body = request(ports["scoring"], "/api/v1/healthcheck", None)
    assert (status, body) == (200, {"status": "OK"})


@slow
@pytest.mark.parametrize(("query", "body", "content_type", "status", "error"), [
    ("", b"[1,", "application/json", 400, "invalid_json"),
    ("", b"[]", "application/json", 422, None),
    ("", BODY, "text/plain", 415, None),
    ("?entity=404404", BODY, "application/json", 404, None),
])
def test_bad_input_gets_the_labs_json_error_not_granians(granian_stack, query, body,
                                                         content_type, status, error):
    arch, ports, _, _ = granian_stack
    got, headers, data = request(ports["scoring"], f"/api/v1/ml/{arch}/predict{query}", body,
                                 content_type)
    assert got == status and set(data) == {"error", "message", "status"}
    assert data["status"] == status and headers["Content-Type"] == "application/json"
    assert error is None or data["error"] == error


@slow
def test_granians_own_answers_before_the_app(granian_stack):
    """What the app never sees: a malformed head is granian's bodiless 400, a head far past
    max_header_bytes its bodiless 431, a head not done in request_timeout_s a closed
    connection with no answer (no 408)."""
    _, ports, _, _ = granian_stack
    out, _ = raw(ports["model"], b"GARBAGE\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"content-length: 0\r\n" in out
    huge = b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 300_000 + b"\r\n\r\n"
    out, _ = raw(ports["model"], huge)
    assert out.startswith(b"HTTP/1.1 431 ") and b"content-length: 0\r\n" in out
    out, elapsed = raw(ports["model"], b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: x\r\n")
    assert out == b"" and 0.8 <= elapsed < 4  # REQUEST_TIMEOUT_S=1 on this model API


@slow
def test_a_body_shorter_than_its_length_is_timed_out_by_the_async_apps_only(granian_stack):
    """granian times the head only: the async apps give the body the lab's deadline themselves
    (services/async_app/body_deadline.py: 408 in the lab's shape, then close), while a sync
    request holds its blocking thread until the client goes (README, "Servers: granian")."""
    arch, ports, _, _ = granian_stack
    head = (f"POST /api/v1/ml/{arch}/predict HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 40\r\n\r\n[5.1,")
    out, elapsed = raw(ports["model"], head.encode(), wait_s=4)
    if arch == "async":
        assert out.startswith(b"HTTP/1.1 408 ") and 0.8 <= elapsed < 3, (out, elapsed)
        body = json.loads(out.split(b"\r\n\r\n", 1)[1])
        assert body["error"] == "request_timeout" and body["status"] == 408
    else:
        assert out == b"<still open>"  # the documented, uncontained wait
    # the service still answers a well-formed request at once
    status, _, _ = request(ports["model"], f"/api/v1/ml/{arch}/predict")
    assert status == 200


@slow
def test_every_worker_uses_the_masters_device(granian_stack):
    """The device FIFO the master made before its workers started is the one every worker
    opened (a worker that did not find it would make a FIFO of its own)."""
    _, ports, started, _ = granian_stack
    master = psutil.Process(started["model"].pid)
    workers = master.children(recursive=True)
    assert len(workers) == 2
    request(ports["model"], "/api/v1/healthcheck", None)
    fifos = set()
    for process in [master, *workers]:
        for fd in Path(f"/proc/{process.pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if "scoring-lab-device-" in target:
                fifos.add(target)
    assert len(fifos) == 1, fifos
    status, _, stats = request(ports["model"], "/api/v1/debug/model", None)
    assert status == 200 and stats["device_slots"] == 1 and stats["device_free_slots"] == 1


@slow
def test_admission_counters_are_served_and_logged_when_a_worker_stops(seeded_redis, tmp_path):
    """Admission control on granian: the counters endpoint answers, and each worker logs its
    counters when the master stops it on SIGTERM (gunicorn's worker_exit line)."""
    for arch in ("sync", "async"):
        port = free_port()
        log = tmp_path / f"scoring-{arch}.log"
        process = start_service("scoring", arch, port, {
            **GRANIAN, "SCORING_LAB_REDIS_URL": seeded_redis.url,
            "SCORING_LAB_MODEL_URL": f"http://127.0.0.1:{free_port()}",
            "SCORING_LAB_ADMISSION_LIMIT": "4"}, log)
        try:
            # Both workers serving first: a worker stopped while it builds its app exits at
            # once, with no line (build_app; README, "Servers: granian").
            wait_until(lambda log=log: log.read_text().count("Started worker-") == 2, 30,
                       f"both granian workers started (log: {log})", interval=0.1)
            status, _, stats = request(port, "/api/v1/admission", None)
            assert status == 200 and stats["limit"] == 4
            assert request(port, f"/api/v1/ml/{arch}/predict")[0] == 502  # no model API
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=GRACEFUL_S + 5) == 0
        finally:
            stop(process)
        lines = [line for line in log.read_text().splitlines() if "admission counters" in line]
        assert len(lines) == 2, log.read_text()[-2000:]
        assert sum(json.loads(line.split("admission counters: ", 1)[1])["admitted"]
                   for line in lines) == 1


@slow
def test_a_dead_worker_is_replaced_as_gunicorn_does(granian_stack):
    _, ports, started, _ = granian_stack
    master = psutil.Process(started["scoring"].pid)
    victim = master.children()[0]
    victim.kill()
    victim.wait(5)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        alive = [c for c in master.children() if c.is_running() and c.pid != victim.pid
                 and c.status() != psutil.STATUS_ZOMBIE]
        if len(alive) == 2:
            break
        time.sleep(0.2)
    assert len(alive) == 2 and master.is_running()
    assert request(ports["scoring"], "/api/v1/healthcheck", None)[0] == 200


@slow
def test_the_async_services_profiles_on_granian(tmp_path):
    """Profiling on the async stack on granian (asyncio's loop): a request's pyinstrument profile
    in async mode, and a window written by each of the two workers."""
    run = tmp_path / "run"
    port = free_port()
    process = start_service("model", "async", port, {
        **GRANIAN, "SCORING_LAB_PROFILING": "true", "SCORING_LAB_RUN_DIR": str(run)},
        tmp_path / "model.log")
    path = "/api/v1/ml/async/predict"

    def post(headers: dict[str, str]):
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=BODY,
                                     headers={"Content-Type": "application/json", **headers})
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.headers

    try:
        single = post({profiling.PROFILE_HEADER: "pyinstrument"})
        assert single[profiling.STATUS_HEADER] == "written"
        window = post({profiling.PROFILE_HEADER: "pyinstrument", profiling.WINDOW_HEADER: "1"})
        window_id = window[profiling.WINDOW_ID_HEADER]
        deadline = time.monotonic() + 4  # bounded: plain requests during and after it
        while time.monotonic() < deadline:
            post({})
    finally:
        stop(process)
    name = single[profiling.FILE_HEADER]
    meta = json.loads((run / "profiles" / f"{name}.meta.json").read_text())
    assert meta["async_mode"] == "enabled"
    metas = sorted(run.glob(f"profiles/model-async_*_win-{window_id}_*.meta.json"))
    assert len({json.loads(m.read_text())["pid"] for m in metas}) == 2, metas


@slow
def test_a_sigterm_while_the_workers_build_their_apps_stops_at_once(tmp_path):
    """The master SIGTERMed as soon as it has spawned its workers, while they import and build
    the app (about a second): they exit at once, not after GRACEFUL_S when the master kills
    them (they would still run the master's inherited handler, which ignores it)."""
    log = tmp_path / "model.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORING_LAB_")}
    env.update({**GRANIAN, "SCORING_LAB_PORT": str(free_port())})
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services", "serve", "--role", "model", "--arch", "sync"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while "Spawning worker-2" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=GRACEFUL_S + 5)
        assert time.monotonic() - started < GRACEFUL_S / 2, log.read_text()
        assert "refused to gracefully stop" not in log.read_text()
    finally:
        stop(process)
