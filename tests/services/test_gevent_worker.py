"""The sync stack on gunicorn's gevent worker (SCORING_LAB_SYNC_WORKER=gevent): real gunicorn
masters, real Redis, one worker per service, so that overlapping requests can only come from
gevent's greenlets, and the model-call deadline still holds on gevent's sockets."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from services.serve import gunicorn_options
from services.settings import Role, Settings, SyncWorker
from services.sync_app.clients import pool_size
from tests.conftest import ROOT, free_port, start_service, stop
from tests.services.test_sync_deadline import ANSWER, RawModel

BODY = b"[5.1,3.5,1.4,0.2]"
SLEEP_S = 0.25  # the model's fixed sleep here: a scoring request holds its handler >= 2x this
GEVENT = {"SCORING_LAB_SYNC_WORKER": "gevent", "SCORING_LAB_WORKERS": "1"}


def post(url: str, body: bytes = BODY, content_type: str = "application/json"):
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def predict_url(port: int, query: str = "") -> str:
    return f"http://127.0.0.1:{port}/api/v1/ml/sync/predict{query}"


# ------------------------------------------------------------------------ settings, no server


def test_gevent_is_a_sync_worker_with_its_connection_count():
    settings = Settings(sync_worker="gevent", gevent_connections=300)
    options = gunicorn_options(Role.SCORING, settings)
    assert options["worker_class"] == "gevent"
    assert options["worker_connections"] == 300
    assert "worker_connections" not in gunicorn_options(Role.SCORING, Settings())
    assert Settings().sync_worker is SyncWorker.MEINHELD  # meinheld stays the default


def test_the_client_pools_follow_a_gevent_workers_concurrency():
    assert pool_size(Settings()) == 256  # blocking meinheld: pool_size as set
    assert pool_size(Settings(sync_worker="gevent")) == 1000  # gevent_connections' default
    assert pool_size(Settings(sync_worker="gevent", gevent_connections=2000)) == 2000
    assert pool_size(Settings(sync_worker="gevent", gevent_connections=10)) == 256


def test_gevent_with_the_meinheld_patch_is_a_clear_error_not_a_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "services", "serve", "--role", "model", "--arch", "sync"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={"PATH": "/usr/bin:/bin", "SCORING_LAB_SYNC_WORKER": "gevent",
             "SCORING_LAB_MEINHELD_PATCH": "true"},
    )
    assert result.returncode == 2
    assert "SCORING_LAB_MEINHELD_PATCH" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "services", "serve", "--role", "model", "--arch", "sync"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={"PATH": "/usr/bin:/bin", "SCORING_LAB_GEVENT_CONNECTIONS": "0"},
    )
    assert result.returncode == 2
    assert "SCORING_LAB_GEVENT_CONNECTIONS" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------------ real servers


@pytest.fixture(scope="module")
def lab(seeded_redis, tmp_path_factory):
    """A gevent model API (fixed sleep) and a gevent scoring handler, one worker each, plus a
    meinheld scoring handler on the same model for the error answers to compare with."""
    logs = tmp_path_factory.mktemp("logs-gevent")
    ports = {name: free_port() for name in ("model", "gevent", "meinheld")}
    started = []
    try:
        started.append(start_service(
            "model", "sync", ports["model"],
            {**GEVENT, "SCORING_LAB_SLEEP_MIN_S": str(SLEEP_S),
             "SCORING_LAB_SLEEP_MAX_S": str(SLEEP_S)}, logs / "model.log"))
        clients = {"SCORING_LAB_REDIS_URL": seeded_redis.url,
                   "SCORING_LAB_MODEL_URL": f"http://127.0.0.1:{ports['model']}"}
        started.append(start_service("scoring", "sync", ports["gevent"], {**GEVENT, **clients},
                                     logs / "gevent.log"))
        started.append(start_service("scoring", "sync", ports["meinheld"],
                                     {"SCORING_LAB_WORKERS": "1", **clients},
                                     logs / "meinheld.log"))
        yield ports, logs
    finally:
        for process in started:
            stop(process)


@pytest.mark.slow
def test_the_gevent_stack_serves_the_scoring_endpoint(lab):
    ports, logs = lab
    status, body = post(predict_url(ports["gevent"]))
    assert (status, body) == (200, {"detail": pytest.approx(SLEEP_S)})
    status, body = post(predict_url(ports["model"]))
    assert (status, body) == (200, {"detail": pytest.approx(SLEEP_S),
                                    "input_mean": pytest.approx(2.55), "batch_size": 1})
    for name in ("model", "gevent"):
        assert "Using worker: gevent" in (logs / f"{name}.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("query, body, content_type, status", [
    ("", b"[]", "application/json", 422),
    ("?entity=a%20b", BODY, "application/json", 422),
    ("?entity=404404", BODY, "application/json", 404),
    ("", b"[1,", "application/json", 400),
    ("", BODY, "text/plain", 415),
])
def test_bad_requests_get_the_answers_meinheld_gives(lab, query, body, content_type, status):
    ports, _ = lab
    answer = post(predict_url(ports["gevent"], query), body, content_type)
    assert answer[0] == status
    assert set(answer[1]) == {"error", "message", "status"} and answer[1]["status"] == status
    assert answer == post(predict_url(ports["meinheld"], query), body, content_type)


@pytest.mark.slow
def test_an_unknown_path_is_the_labs_404(lab):
    ports, _ = lab
    status, body = post(f"http://127.0.0.1:{ports['gevent']}/api/v1/ml/sync/nothing")
    assert (status, body["error"], body["status"]) == (404, "not_found", 404)


def max_in_flight(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda event: (event[0], event[1]))  # an end before a start at a tie
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


def test_max_in_flight_counts_overlaps():
    assert max_in_flight([(0, 1), (1, 2), (2, 3)]) == 1
    assert max_in_flight([(0, 3), (1, 2), (1.5, 4), (3.5, 5)]) == 3


@pytest.mark.slow
def test_one_worker_serves_overlapping_requests(lab):
    """8 requests at once to the 1-worker scoring handler. Each was in the handler during at
    least the last 2 x SLEEP_S before its answer arrived (two sequential model calls of exactly
    SLEEP_S), so those windows are times the worker held it. A worker serving one request at a
    time (or a model API doing so) ends them >= 2 x SLEEP_S apart: at most 2 windows would
    touch. Overlap is counted, nothing is timed against a speed."""
    ports, _ = lab
    n = 8
    barrier = threading.Barrier(n)
    ends: list[float] = []
    answers = []

    def one() -> None:
        barrier.wait(timeout=10)
        answers.append(post(predict_url(ports["gevent"])))
        ends.append(time.monotonic())

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == [(200, {"detail": pytest.approx(SLEEP_S)})] * n
    held = [(end - 2 * SLEEP_S, end) for end in ends]
    assert max_in_flight(held) >= 4, sorted(ends)


@pytest.fixture
def scoring_on(seeded_redis, tmp_path):
    """A 1-worker gevent scoring handler in front of a raw model of the test's choosing."""
    started, models = [], []

    def start(behaviour, timeout_s: float) -> int:
        models.append(RawModel(behaviour))
        port = free_port()
        started.append(start_service("scoring", "sync", port, {
            **GEVENT, "SCORING_LAB_REDIS_URL": seeded_redis.url,
            "SCORING_LAB_MODEL_URL": models[-1].url.removesuffix("/predict"),
            "SCORING_LAB_MODEL_TIMEOUT_S": str(timeout_s),
        }, tmp_path / f"scoring-{port}.log"))
        return port

    yield start
    for process in started:
        stop(process)
    for model in models:
        model.close()


@pytest.mark.slow
def test_a_silent_model_is_a_504_at_the_deadline_and_the_worker_serves_meanwhile(scoring_on):
    def silent(conn, n):  # reads the request, never answers (the test ends it)
        time.sleep(20)
        return False

    port = scoring_on(silent, timeout_s=1.0)
    answer: list = []

    def call() -> None:
        started = time.monotonic()
        answer.extend([post(predict_url(port)), time.monotonic() - started])

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.3)  # the call is waiting on the model now
    # The same (only) worker answers while its other greenlet waits on the model.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/healthcheck", timeout=5) as r:
        assert r.status == 200
    assert caller.is_alive()
    caller.join(30)
    (status, body), elapsed = answer
    assert (status, body["error"]) == (504, "model_timeout")
    assert 0.9 <= elapsed < 1.0 + 4.0  # the deadline, with a loaded machine's margin


@pytest.mark.slow
def test_a_trickling_model_is_cut_at_the_deadline_on_gevent_sockets(scoring_on):
    def trickle(conn, n):  # one byte every 0.3 s: no single read ever times out
        for byte in ANSWER:
            time.sleep(0.3)
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                return False
        return True

    port = scoring_on(trickle, timeout_s=1.0)
    started = time.monotonic()
    status, body = post(predict_url(port))
    assert (status, body["error"]) == (504, "model_timeout")
    assert time.monotonic() - started < 1.0 + 4.0
