"""Admission control (services/admission.py) through the real servers: the in-flight bound
answers 503 with Retry-After beyond it and every admitted request gets its normal answer; a
request past its deadline is shed before any Redis read or model call (both counted at their
source: the model stub's requests, Redis's own command statistics); off, nothing changes."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from services import admission, errors
from services.settings import Settings, SettingsError, settings_from_env
from tests.conftest import start_service, stop
from tests.services.test_apis import ModelStub

BODY = b"[5.1,3.5,1.4,0.2]"
MODEL_ANSWER = {"detail": 0.04}

# Each stack with one worker, so its counters are the service's. Bounds chosen so that a
# rejection is visible: gthread's 3 is its 2 threads plus one queued request.
STACKS = {
    "meinheld": ("sync", {"SCORING_LAB_SYNC_WORKER": "meinheld"}, 1),
    "gthread": ("sync", {"SCORING_LAB_SYNC_WORKER": "gthread",
                         "SCORING_LAB_GTHREAD_THREADS": "2"}, 3),
    "gevent": ("sync", {"SCORING_LAB_SYNC_WORKER": "gevent"}, 2),
    "async": ("async", {}, 2),
}


# ---------------------------------------------------------------------- the core, alone


def test_bound_counts_and_releases():
    gates = admission.Admission(Settings(admission_limit=2))
    assert [gates.try_enter() for _ in range(3)] == [True, True, False]
    gates.leave()
    assert gates.try_enter()
    stats = gates.stats()
    assert (stats["in_flight"], stats["peak_in_flight"], stats["rejected"]) == (2, 2, 1)


def test_no_limit_never_rejects():
    gates = admission.Admission(Settings(admission_deadlines=True))
    assert all(gates.try_enter() for _ in range(1000))
    assert gates.stats()["rejected"] == 0


def test_deadline_from_header_or_budget():
    gates = admission.Admission(Settings(admission_deadlines=True, admission_budget_s=0.5))
    assert gates.deadline("1700000000.25", arrived=5.0) == 1700000000.25
    assert gates.deadline(None, arrived=5.0) == 5.5
    assert admission.Admission(Settings(admission_deadlines=True)).deadline(None, 5.0) is None
    # Deadlines off: the header is not even read.
    assert admission.Admission(Settings(admission_limit=1)).deadline("soon", 5.0) is None


@pytest.mark.parametrize("value", ["soon", "nan", "inf", "-1", ""])
def test_bad_deadline_header_is_a_400_naming_it(value):
    gates = admission.Admission(Settings(admission_deadlines=True))
    with pytest.raises(errors.ApiError) as raised:
        gates.deadline(value, arrived=0.0)
    assert raised.value.status == 400 and raised.value.code == "invalid_deadline"
    assert repr(value) in raised.value.message
    assert gates.stats()["invalid_deadline"] == 1


def test_shed_and_admitted_are_counted():
    gates = admission.Admission(Settings(admission_deadlines=True))
    with pytest.raises(errors.ApiError) as raised:
        gates.check_deadline(str(time.time() - 1), arrived=time.time())
    assert (raised.value.status, raised.value.code) == (503, "deadline_exceeded")
    assert gates.headers(raised.value) == [("Retry-After", "1")]
    gates.check_deadline(str(time.time() + 60), arrived=time.time())
    assert (gates.stats()["shed"], gates.stats()["admitted"]) == (1, 1)


def test_budget_needs_deadlines_on():
    with pytest.raises(SettingsError, match="SCORING_LAB_ADMISSION_DEADLINES"):
        settings_from_env({"SCORING_LAB_ADMISSION_BUDGET_S": "0.5"})


def test_off_by_default():
    assert not admission.enabled(Settings())


def test_described_only_when_on():
    from services.describe import describe
    from services.settings import Arch, Role

    path = f"GET {admission.STATS_PATH}"
    assert path not in describe(Role.SCORING, Arch.SYNC, Settings(), "flask")["endpoints"]
    on = Settings(admission_limit=4)
    assert path in describe(Role.SCORING, Arch.ASYNC, on, "fastapi")["endpoints"]
    assert path not in describe(Role.MODEL, Arch.ASYNC, on, "fastapi")["endpoints"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT"])
def test_only_scoring_posts_are_gated(method):
    """Another method on the predict path is the app's to answer (405), even at the bound."""
    from services.async_app.admission import AsgiAdmission
    from services.sync_app.admission import WsgiAdmission

    full = admission.Admission(Settings(admission_limit=1))
    assert full.try_enter()
    reached = []
    wsgi = WsgiAdmission(lambda environ, start: reached.append("sync") or [b""], full,
                         "/api/v1/ml/sync/predict", gate=True)
    wsgi({"PATH_INFO": "/api/v1/ml/sync/predict", "REQUEST_METHOD": method}, None)

    async def inner(scope, receive, send):
        reached.append("async")

    asgi = AsgiAdmission(inner, full, "/api/v1/ml/async/predict")
    asyncio.run(asgi({"type": "http", "path": "/api/v1/ml/async/predict", "method": method,
                      "headers": []}, None, None))
    assert reached == ["sync", "async"] and full.stats()["rejected"] == 0


def test_aimd_grows_by_one_per_limit_of_good_answers_up_to_its_maximum():
    aimd = admission.AimdLimit(4, target_s=0.1)
    aimd.value = 2.0
    aimd.observe(0.05, arrived=time.time(), ok=True)
    assert aimd.value == 2.5
    for _ in range(20):
        aimd.observe(0.05, arrived=time.time(), ok=True)
    assert aimd.value == 4.0 and aimd.limit == 4


def test_aimd_cuts_once_per_episode_and_never_below_one():
    aimd = admission.AimdLimit(10, target_s=0.1)
    before = time.time()
    aimd.observe(0.5, arrived=before, ok=True)  # slow
    assert aimd.value == pytest.approx(9.0)
    aimd.observe(0.5, arrived=before, ok=True)  # the same episode: arrived before the cut
    assert aimd.value == pytest.approx(9.0)
    time.sleep(0.01)
    aimd.observe(0.01, arrived=time.time(), ok=False)  # a 5xx, after the cut: cuts again
    assert aimd.value == pytest.approx(8.1)
    for _ in range(100):
        time.sleep(0.001)
        aimd.observe(1.0, arrived=time.time(), ok=True)
    assert aimd.limit == 1 and aimd.value == 1.0


def test_adaptive_needs_a_limit():
    with pytest.raises(SettingsError, match="SCORING_LAB_ADMISSION_LIMIT"):
        settings_from_env({"SCORING_LAB_ADMISSION_ADAPTIVE": "true"})


# ------------------------------------------------------------------ the real servers


def post(port: int, arch: str, headers: dict[str, str] | None = None, timeout: float = 20):
    """(status, headers, JSON body, monotonic time the answer was read)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", f"/api/v1/ml/{arch}/predict?entity=1", body=BODY,
                     headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        body = json.loads(response.read())
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, body, time.monotonic()
    finally:
        conn.close()


def get_json(port: int, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def at_once(n: int, port: int, arch: str) -> list[tuple]:
    """``n`` scoring requests sent together, each on its own connection."""
    answers: list = [None] * n

    def one(i: int) -> None:
        try:
            answers[i] = post(port, arch)
        except OSError as exc:  # a dropped request: the assertion below names it
            answers[i] = (type(exc).__name__, {}, {}, time.monotonic())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
        time.sleep(0.01)  # in order, so they arrive while the first ones are in flight
    for thread in threads:
        thread.join(30)
    return answers


def redis_gets(url: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


@contextmanager
def scoring(arch: str, env: dict[str, str], redis_url: str, model_url: str, log: Path):
    from tests.conftest import free_port

    port = free_port()
    process = start_service("scoring", arch, port, {
        "SCORING_LAB_WORKERS": "1", "SCORING_LAB_REDIS_URL": redis_url,
        "SCORING_LAB_MODEL_URL": model_url, **env}, log)
    try:
        yield port
    finally:
        stop(process)


@pytest.fixture(scope="module")
def model():
    stub = ModelStub()
    yield stub
    stub.close()


@pytest.fixture(scope="module", params=list(STACKS))
def stack(request, seeded_redis, model, tmp_path_factory):
    """A scoring service with admission control on: its stack's bound, deadlines read."""
    arch, env, limit = STACKS[request.param]
    env = {**env, "SCORING_LAB_ADMISSION_LIMIT": str(limit),
           "SCORING_LAB_ADMISSION_DEADLINES": "true"}
    log = tmp_path_factory.mktemp("admission") / f"scoring-{request.param}.log"
    with scoring(arch, env, seeded_redis.url, model.url, log) as port:
        yield request.param, arch, port, limit


@pytest.mark.slow
def test_bound_rejects_at_once_and_serves_every_admitted(stack, model):
    name, arch, port, limit = stack
    model.delay_s = 0.8  # an admitted request holds its place >= 0.8 s
    _, before = get_json(port, admission.STATS_PATH)
    calls = len(model.bodies)
    sent = limit + 3
    answers = at_once(sent, port, arch)
    _, after = get_json(port, admission.STATS_PATH)
    served = [a for a in answers if a[0] == 200]
    refused = [a for a in answers if a[0] == 503]
    assert len(served) + len(refused) == sent, [a[0] for a in answers]
    assert all(a[2] == MODEL_ANSWER for a in served)  # admitted: the normal answer
    assert all(a[2]["error"] == "overloaded" and a[1].get("retry-after") == "1"
               for a in refused)
    assert after["peak_in_flight"] <= limit and after["in_flight"] == 0
    assert after["rejected"] - before["rejected"] == len(refused)
    assert after["admitted"] - before["admitted"] == len(served)
    assert len(model.bodies) - calls == 2 * len(served)  # a refused request calls nothing
    if name == "meinheld":
        # One request in the handler at a time by construction: the others wait in the
        # kernel, where the bound cannot see them; all are served, one after the other.
        assert len(served) == sent
    else:
        assert len(served) == limit
        # Refused without waiting for a thread, a greenlet or the event loop's handlers:
        # every 503 was read before the first admitted answer.
        assert max(a[3] for a in refused) < min(a[3] for a in served)


@pytest.mark.slow
def test_past_deadline_is_shed_before_redis_and_model(stack, model, seeded_redis):
    name, arch, port, _ = stack
    model.delay_s = 0.0
    _, before = get_json(port, admission.STATS_PATH)
    calls, gets = len(model.bodies), redis_gets(seeded_redis.url)
    status, headers, body, _ = post(port, arch, {"X-Request-Deadline": f"{time.time() - 0.5}"})
    assert (status, body["error"], headers.get("retry-after")) == (503, "deadline_exceeded", "1")
    assert len(model.bodies) == calls and redis_gets(seeded_redis.url) == gets
    _, after = get_json(port, admission.STATS_PATH)
    assert after["shed"] - before["shed"] == 1

    # A deadline still ahead is served as usual; a header that is no time is a 400.
    status, _, body, _ = post(port, arch, {"X-Request-Deadline": f"{time.time() + 30}"})
    assert (status, body) == (200, MODEL_ANSWER)
    status, _, body, _ = post(port, arch, {"X-Request-Deadline": "tomorrow"})
    assert (status, body["error"]) == (400, "invalid_deadline") and "'tomorrow'" in body["message"]


@pytest.mark.slow
def test_meinheld_sheds_what_waited_out_its_deadline_in_the_backlog(seeded_redis, model,
                                                                    tmp_path):
    """A request queued in the kernel behind a busy meinheld worker, whose client's deadline
    passes meanwhile, is shed when the worker reaches it: the absolute deadline carries the
    time no server code saw."""
    env = {"SCORING_LAB_SYNC_WORKER": "meinheld", "SCORING_LAB_ADMISSION_DEADLINES": "true"}
    model.delay_s = 0.5
    with scoring("sync", env, seeded_redis.url, model.url, tmp_path / "scoring.log") as port:
        calls = len(model.bodies)
        first: list = []
        busy = threading.Thread(target=lambda: first.append(post(port, "sync")))
        busy.start()
        time.sleep(0.2)  # the worker is in its first model call (2 x 0.5 s)
        status, _, body, _ = post(port, "sync", {"X-Request-Deadline": f"{time.time() + 0.3}"})
        busy.join(20)
        assert (status, body["error"]) == (503, "deadline_exceeded")
        assert first[0][0] == 200 and len(model.bodies) - calls == 2
        _, stats = get_json(port, admission.STATS_PATH)
        assert (stats["shed"], stats["admitted"]) == (1, 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["meinheld", "gthread", "async"])
def test_off_behaves_as_today(name, seeded_redis, model, tmp_path):
    """No admission settings: every request served however many arrive, the deadline header
    ignored, no counters endpoint."""
    arch, env, limit = STACKS[name]
    model.delay_s = 0.2
    with scoring(arch, env, seeded_redis.url, model.url, tmp_path / "scoring.log") as port:
        answers = at_once(limit + 3, port, arch)
        assert [a[0] for a in answers] == [200] * (limit + 3)
        assert all(a[2] == MODEL_ANSWER for a in answers)
        status, _, body, _ = post(port, arch, {"X-Request-Deadline": f"{time.time() - 5}"})
        assert (status, body) == (200, MODEL_ANSWER)
        assert get_json(port, admission.STATS_PATH)[0] == 404


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gthread", "async"])
def test_adaptive_limit_shrinks_on_slow_answers_and_grows_back(name, seeded_redis, model,
                                                                tmp_path):
    arch, env, _ = STACKS[name]
    env = {**env, "SCORING_LAB_ADMISSION_LIMIT": "8", "SCORING_LAB_ADMISSION_ADAPTIVE": "true",
           "SCORING_LAB_ADMISSION_TARGET_S": "0.3"}
    with scoring(arch, env, seeded_redis.url, model.url, tmp_path / "scoring.log") as port:
        model.delay_s = 0.5  # every answer slower than the target
        for _ in range(4):  # one after the other: each arrives after the previous cut
            assert post(port, arch)[0] == 200
        _, stats = get_json(port, admission.STATS_PATH)
        assert (stats["adaptive"], stats["limit_max"]) == (True, 8)
        assert stats["limit"] == 5  # 8 x 0.9^4 = 5.2
        model.delay_s = 0.0
        for _ in range(6):
            assert post(port, arch)[0] == 200
        _, stats = get_json(port, admission.STATS_PATH)
        assert stats["limit"] == 6  # +1/5 per good answer


@pytest.mark.slow
@pytest.mark.parametrize("name, shed", [("gthread", True), ("meinheld", False)])
def test_budget_counts_from_arrival_as_each_server_sees_it(name, shed, seeded_redis, model,
                                                           tmp_path):
    """A request without a header, queued behind a busy worker for longer than the budget:
    gthread saw it arrive when its main loop queued it for the one thread (shed when a thread
    takes it); meinheld sees it only when the worker reads it, from the kernel (served)."""
    arch, env, _ = STACKS[name]
    env = {**env, "SCORING_LAB_GTHREAD_THREADS": "1", "SCORING_LAB_ADMISSION_DEADLINES": "true",
           "SCORING_LAB_ADMISSION_BUDGET_S": "0.4"}
    model.delay_s = 0.5
    with scoring(arch, env, seeded_redis.url, model.url, tmp_path / "scoring.log") as port:
        calls = len(model.bodies)
        first: list = []
        busy = threading.Thread(target=lambda: first.append(post(port, arch)))
        busy.start()
        time.sleep(0.2)  # the worker's one thread is in its first model call (2 x 0.5 s)
        status, _, body, _ = post(port, arch)
        busy.join(20)
        assert first[0][0] == 200
        if shed:
            assert (status, body["error"]) == (503, "deadline_exceeded")
            assert len(model.bodies) - calls == 2
        else:
            assert (status, body) == (200, MODEL_ANSWER)
            assert len(model.bodies) - calls == 4
