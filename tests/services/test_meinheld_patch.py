"""SCORING_LAB_MEINHELD_PATCH through the real servers: one gunicorn + meinheld worker serves
several scoring requests at once (its model and Redis sockets are cooperative), its socket
timeouts fire, and a greenlet layout the lab cannot adapt stops the service at start-up
(services/sync_app/meinheld_patch.py says why meinheld 1.0.2 needs adapting to greenlet 3)."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from services import cli
from services.sync_app import meinheld_patch
from tests.conftest import free_port, start_service, stop

pytestmark = pytest.mark.slow

PREDICT = "/api/v1/ml/sync/predict"
HOLD_S = 0.2  # each model call; a scoring request makes two, one after the other
# Small enough that the blocking control serves the burst (BURST x 2 x HOLD_S) well within
# meinheld's 3 s request timeout, which a connection waiting for a busy worker runs into.
BURST = 4


def post(port: int, entity: int, timeout: float = 30) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", f"{PREDICT}?entity={entity}", body=b"[1.0, 2.0]",
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A real sync model API with room for every call of a burst at once."""
    port = free_port()
    env = {"SCORING_LAB_WORKERS": str(2 * BURST), "SCORING_LAB_SLEEP_MIN_S": str(HOLD_S),
           "SCORING_LAB_SLEEP_MAX_S": str(HOLD_S)}
    process = start_service("model", "sync", port, env,
                            tmp_path_factory.mktemp("model") / "model.log")
    yield port
    stop(process)


def scoring(tmp_path, redis_url: str, model_port: int, **env: str):
    port = free_port()
    full_env = {"SCORING_LAB_WORKERS": "1", "SCORING_LAB_REDIS_URL": redis_url,
                "SCORING_LAB_MODEL_URL": f"http://127.0.0.1:{model_port}", **env}
    return port, start_service("scoring", "sync", port, full_env, tmp_path / "scoring.log")


def model_connections(master_pid: int, model_port: int) -> int:
    """Connections the single worker holds to the model API: its keep-alive pool opens a new
    one only while every pooled one is busy, so N connections mean N calls were in flight at
    once in that one process."""
    (worker,) = psutil.Process(master_pid).children()
    return sum(1 for c in worker.net_connections(kind="tcp")
               if c.raddr and c.raddr.port == model_port and c.status == psutil.CONN_ESTABLISHED)


@pytest.mark.parametrize("patched", [True, False], ids=["patched", "plain-control"])
def test_one_worker_serves_requests_at_once(tmp_path, seeded_redis, model, patched):
    env = {"SCORING_LAB_MEINHELD_PATCH": "true"} if patched else {}
    port, process = scoring(tmp_path, seeded_redis.url, model, **env)
    try:
        with ThreadPoolExecutor(BURST) as pool:
            answers = list(pool.map(lambda i: post(port, i), range(BURST)))
        assert answers == [(200, {"detail": HOLD_S})] * BURST
        held = model_connections(process.pid, model)
        assert process.poll() is None
    finally:
        stop(process)
    log = (tmp_path / "scoring.log").read_text()
    assert "Traceback" not in log and "SIGSEGV" not in log, log
    if patched:
        # More than one model call in flight in one worker: requests overlapped.
        assert held >= 2, f"{held} model connection(s): the worker served one request at a time"
    else:
        # The control: a blocking worker serves one request at a time, one connection does.
        assert held == 1


def test_a_cooperative_wait_times_out(tmp_path, seeded_redis, tmp_path_factory):
    """A model slower than MODEL_TIMEOUT_S (0.5 s) gets a 504: the wait's timeout reaches
    meinheld rounded up to 1 s (msocket's own int() made it 0, i.e. no timeout, and the slow
    answer would have been a 200)."""
    model_port = free_port()
    slow = start_service("model", "sync", model_port,
                         {"SCORING_LAB_WORKERS": "2", "SCORING_LAB_SLEEP_MIN_S": "2.5",
                          "SCORING_LAB_SLEEP_MAX_S": "2.5"}, tmp_path / "slow-model.log")
    try:
        port, process = scoring(tmp_path, seeded_redis.url, model_port,
                                SCORING_LAB_MEINHELD_PATCH="true",
                                SCORING_LAB_MODEL_TIMEOUT_S="0.5")
        try:
            started = time.monotonic()
            status, body = post(port, 1)
            took = time.monotonic() - started
            assert (status, body.get("error"), body.get("status")) == (504, "model_timeout", 504), \
                (body, took)
            assert took < 2.5, f"answered after {took:.2f} s: the model's answer, not a timeout"
            assert process.poll() is None
        finally:
            stop(process)
    finally:
        stop(slow)


def test_an_unknown_greenlet_layout_stops_the_service_at_start(monkeypatch, capsys):
    reason = meinheld_patch.layout_problem(48, 48, "9.9")
    assert reason is not None and "greenlet 9.9 objects are 48 bytes" in reason
    assert "greensupport.c greenlet_getparent" in reason
    # The layouts the lab adapts, or that already have the field.
    assert meinheld_patch.layout_problem(40, 40, "3.5.6") is None
    assert meinheld_patch.layout_problem(128, 128, "0.4.17") is None
    assert meinheld_patch.layout_problem(40, 0, "3.5.6") is not None  # size not where expected

    monkeypatch.setattr(meinheld_patch, "incompatibility", lambda: reason)
    monkeypatch.setenv("SCORING_LAB_MEINHELD_PATCH", "true")
    assert cli.main(["serve", "--role", "scoring", "--arch", "sync"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {reason}\n"


# meinheld with its own patching and nothing of the lab's: the app's first cooperative wait.
UNADAPTED_SERVER = """
import socket, sys
from meinheld import patch, server
patch.patch_all()
quiet = ("127.0.0.1", int(sys.argv[2]))

def app(environ, start_response):
    try:
        socket.create_connection(quiet, timeout=2).recv(1)
        body = b"waited"
    except Exception as exc:
        body = f"{type(exc).__name__}: {exc}".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]

server.listen(("127.0.0.1", int(sys.argv[1])))
server.run(app)
"""


def test_unadapted_meinheld_patch_still_crashes(tmp_path):
    """Why services/sync_app/meinheld_patch.py exists: this failing means meinheld or greenlet
    changed, and the adaptation should be looked at again."""
    import socket
    import subprocess
    import sys

    from tests.conftest import wait_until

    quiet = socket.create_server(("127.0.0.1", 0))  # accepts into its backlog, never answers
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-c", UNADAPTED_SERVER, str(port),
         str(quiet.getsockname()[1])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(listening, 30, f"meinheld on port {port}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/")
            body = conn.getresponse().read().decode()
        except (ConnectionError, http.client.HTTPException):
            body = None  # the worker died mid-request
        finally:
            conn.close()
        if body is None:
            assert process.wait(timeout=10) == -11  # SIGSEGV
        else:
            assert body == "TypeError: bad argument type for built-in operation"
    finally:
        stop(process)
        quiet.close()
