"""The job queue (services/jobs.py) through both frameworks, with a real Redis: submit answers
202 with an id and a Location, the id is polled to done or failed, an unknown or expired id is
404, a full queue refuses with 503 and Retry-After, and an accepted job survives its worker
being SIGKILLed (RQ's abandoned-job handling, SAQ's sweep: retried to done). The tests marked
slow run real scoring services and real queue workers (``serve --role queue``)."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request

import psutil
import pytest
import redis

from services import features, jobs
from services.settings import Arch, Settings
from tests.conftest import (
    free_port,
    start_queue_workers,
    start_redis,
    start_service,
    stop,
    wait_until,
)
from tests.services.test_apis import BODY, JSON, ModelStub, open_client


@pytest.fixture
def private_redis(tmp_path):
    """A Redis of this test alone (the queues' keys are fixed names), seeded and saved to its
    snapshot as the lab's feature store is."""
    server = start_redis(tmp_path / "redis")
    client = redis.Redis.from_url(server.url)
    features.seed(client, 50)
    features.persist(client)
    client.close()
    yield server
    stop(server.process)


@pytest.fixture
def model_stub():
    stub = ModelStub()
    yield stub
    stub.close()


@pytest.fixture(params=["sync", "async"])
def arch(request) -> str:
    return request.param


# --------------------------------------------------------------- in-process apps, no workers


@pytest.fixture
def app_client(arch):
    opened = []

    def make(**settings):
        client, closer = open_client(arch, "scoring", Settings(**settings))
        if closer is not None:
            opened.append(closer)
        return client

    yield make
    for closer in opened:
        closer.__exit__(None, None, None)


def submit(client, query: str = "?entity=3", body: bytes = BODY):
    path = jobs.jobs_path(Arch(client.arch)) + query
    if client.arch == "sync":
        response = client._client.post(path, data=body, headers=JSON)
        return response.status_code, response.get_json(), response.headers
    response = client._client.post(path, content=body, headers=JSON)
    return response.status_code, response.json(), response.headers


def test_a_full_queue_refuses_with_503_and_retry_after(app_client, private_redis, model_stub):
    """No worker runs: two jobs fill a queue of two, the third is refused and not queued."""
    client = app_client(redis_url=private_redis.url, model_url=model_stub.url,
                        queue_max_length=2, queue_retry_after_s=3)
    ids = []
    for _ in range(2):
        status, body, headers = submit(client)
        assert status == 202 and body["status"] == "pending", body
        assert headers["Location"] == jobs.job_path(Arch(client.arch), body["id"])
        ids.append(body["id"])
    status, body, headers = submit(client)
    assert (status, body["error"]) == (503, "queue_full"), body
    assert headers["Retry-After"] == "3" and set(body) == {"error", "message", "status"}
    name = jobs.QUEUE_NAMES[Arch(client.arch)]
    waiting = redis.Redis.from_url(private_redis.url)
    key = f"rq:queue:{name}" if client.arch == "sync" else f"saq:{name}:queued"
    assert waiting.llen(key) == 2
    for job_id in ids:
        assert client.get(jobs.job_path(Arch(client.arch), job_id)) == (
            200, {"id": job_id, "status": "pending"})
    # Bad input is refused as by the predict endpoint, before the (full) queue is looked at.
    assert submit(client, body=b"[1,")[0] == 400
    assert submit(client, query="?entity=a%20b")[0] == 422
    assert model_stub.bodies == []


def test_unknown_and_malformed_ids_are_404(app_client, private_redis, model_stub):
    client = app_client(redis_url=private_redis.url, model_url=model_stub.url)
    base = jobs.jobs_path(Arch(client.arch))
    for job_id in (jobs.new_job_id(), "nope", "A" * 32, "0" * 33):
        status, body = client.get(f"{base}/{job_id}")
        assert (status, body["error"]) == (404, "job_not_found"), (job_id, body)
    assert client.get(f"{base}/")[0] == 404


def test_a_long_poll_of_a_job_no_worker_takes_answers_pending_after_its_wait(
        app_client, private_redis, model_stub):
    """No worker runs: ``?wait=`` holds the poll (at least most of its wait: nothing ends the
    job) and answers pending; a bad wait is 422 invalid_wait, before any Redis call."""
    client = app_client(redis_url=private_redis.url, model_url=model_stub.url,
                        queue_max_wait_s=2)
    status, body, headers = submit(client)
    assert status == 202
    started = time.monotonic()
    assert client.get(headers["Location"] + "?wait=0.5") == (
        200, {"id": body["id"], "status": "pending"})
    assert time.monotonic() - started >= 0.45
    for bad in ("0", "-1", "abc", "nan", "inf", "1e3", "2.5", "", "1.", ".5", "1&wait=1",
                "9" * 40):
        status, answer = client.get(f"{headers['Location']}?wait={bad}")
        assert (status, answer["error"]) == (422, "invalid_wait"), (bad, answer)
        assert set(answer) == {"error", "message", "status"}
    # an unknown id is 404 at once, waiting or not
    status, answer = client.get(jobs.job_path(Arch(client.arch), jobs.new_job_id()) + "?wait=2")
    assert (status, answer["error"]) == (404, "job_not_found")


def test_redis_down_and_restarted_from_its_snapshot(app_client, private_redis, model_stub,
                                                    tmp_path):
    """What an accepted job becomes when Redis dies: the lab's Redis keeps a snapshot of the
    features only (saved at seeding, no AOF), so a restarted Redis has them and not the jobs:
    the job's id answers 404. While Redis is down, submit and poll answer 503, never 202."""
    client = app_client(redis_url=private_redis.url, model_url=model_stub.url,
                        redis_timeout_s=0.5)
    status, body, _ = submit(client)
    assert status == 202
    path = jobs.job_path(Arch(client.arch), body["id"])
    private_redis.process.send_signal(signal.SIGKILL)
    private_redis.process.wait()
    assert submit(client)[0] == 503
    status, body = client.get(path)
    assert (status, body["error"]) == (503, "queue_unavailable")
    restarted = start_redis(tmp_path / "redis", port=private_redis.port)
    try:
        assert redis.Redis.from_url(restarted.url).get(features.key("3")) is not None
        status, body = client.get(path)
        assert (status, body["error"]) == (404, "job_not_found")
    finally:
        stop(restarted.process)


# ------------------------------------------------------- real services and real workers


def http(method: str, url: str, body: bytes | None = None):
    request = urllib.request.Request(url, data=body, method=method, headers=JSON)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers


def poll(base: str, path: str, timeout: float) -> dict:
    """Poll ``path`` until the job is no longer pending; its last answer."""
    answers = []

    def ended() -> bool:
        status, body, _ = http("GET", base + path)
        assert status == 200, body
        answers.append(body)
        return body["status"] != jobs.PENDING

    wait_until(ended, timeout, f"job {path} to end", interval=0.1)
    return answers[-1]


@pytest.fixture
def queue_lab(arch, private_redis, model_stub, tmp_path):
    """A real scoring service and real queue workers of ``arch`` on the private Redis, the
    model stub behind both; ``start(**env)`` starts them with more SCORING_LAB_* variables."""
    started = []

    def start(workers: int = 1, **env):
        common = {"SCORING_LAB_REDIS_URL": private_redis.url,
                  "SCORING_LAB_MODEL_URL": model_stub.url,
                  **{f"SCORING_LAB_{k.upper()}": str(v) for k, v in env.items()}}
        port = free_port()
        started.append(start_service("scoring", arch, port,
                                     {**common, "SCORING_LAB_WORKERS": "1"},
                                     tmp_path / "scoring.log"))
        started.append(start_queue_workers(arch, common, tmp_path / "queue.log", workers))
        return f"http://127.0.0.1:{port}", started[-1]

    yield start
    for process in started:
        stop(process)


@pytest.mark.slow
def test_submit_poll_done_failed_and_expired(arch, queue_lab, model_stub):
    model_stub.reply = (200, b'{"detail": 0.045}')
    base, _ = queue_lab(queue_result_ttl_s=2)
    status, body, headers = http("POST", f"{base}{jobs.jobs_path(Arch(arch))}?entity=7", BODY)
    assert status == 202 and body["status"] == "pending"
    assert headers["Location"] == jobs.job_path(Arch(arch), body["id"])
    done = poll(base, headers["Location"], 15)
    assert done == {"id": body["id"], "status": "done", "result": {"detail": 0.045}}
    # what the in-line handler does: the entity's features, the model twice
    assert model_stub.bodies == [[5.1, 3.5, 1.4, 0.2, *features.vector("7")]] * 2
    # a job that fails for a reason of its own ends failed with that reason, not retried
    status, body, headers = http("POST", f"{base}{jobs.jobs_path(Arch(arch))}?entity=999999",
                                 BODY)
    failed = poll(base, headers["Location"], 15)
    assert failed["status"] == "failed" and failed["error"]["error"] == "entity_not_found"
    assert failed["error"]["status"] == 404 and len(model_stub.bodies) == 2
    # kept queue_result_ttl_s (2 s), then unknown
    wait_until(lambda: http("GET", base + headers["Location"])[0] == 404, 10,
               "the failed job's answer to expire")
    status, body, _ = http("GET", base + jobs.job_path(Arch(arch), done["id"]))
    assert (status, body["error"]) == (404, "job_not_found")


@pytest.mark.slow
def test_a_sigkilled_worker_loses_no_accepted_job(arch, queue_lab, model_stub):
    """Three jobs accepted; the one worker is SIGKILLed while the model holds its first call;
    the master replaces it, and every job ends done (the killed one retried)."""
    model_stub.delay_s = 2.0
    base, master = queue_lab(model_calls=1, model_timeout_s=2.5, queue_job_timeout_s=3,
                             queue_sweep_s=1, queue_retries=1)
    locations = []
    for entity in (1, 2, 3):
        status, _, headers = http("POST", f"{base}{jobs.jobs_path(Arch(arch))}?entity={entity}",
                                  BODY)
        assert status == 202
        locations.append(headers["Location"])
    wait_until(lambda: model_stub.bodies, 10, "a job's first model call")
    (worker,) = psutil.Process(master.pid).children()
    os.kill(worker.pid, signal.SIGKILL)
    model_stub.delay_s = 0.0
    killed_at = time.monotonic()
    # the job's timeout (3 s) + RQ's margin (3 s) or SAQ's abort wait (5 s) + sweeps
    outcomes = [poll(base, location, 25) for location in locations]
    assert [o["status"] for o in outcomes] == ["done"] * 3, outcomes
    assert len(model_stub.bodies) >= 4  # the killed attempt, then each job once
    replacements = psutil.Process(master.pid).children()
    assert len(replacements) == 1 and replacements[0].pid != worker.pid
    print(f"{arch}: the killed worker's jobs done {time.monotonic() - killed_at:.1f} s after")


@pytest.mark.slow
def test_a_long_poll_answers_as_its_job_ends(arch, queue_lab, model_stub):
    """``?wait=`` answers when the worker ends the job (woken by the queue's notice, not at the
    end of its wait), done or failed; the next long poll of an ended job answers at once."""
    model_stub.reply = (200, b'{"detail": 0.045}')
    model_stub.delay_s = 1.0
    base, _ = queue_lab(model_calls=1)
    for entity, status in ((7, "done"), (999999, "failed")):
        code, _, headers = http("POST", f"{base}{jobs.jobs_path(Arch(arch))}?entity={entity}",
                                BODY)
        assert code == 202
        started = time.monotonic()
        code, answer, _ = http("GET", f"{base}{headers['Location']}?wait=8")
        took = time.monotonic() - started
        assert code == 200 and answer["status"] == status, answer
        # the model's 1 s for the job that calls it; either way far from the 8 s wait
        assert took < 6, f"{arch}: the long poll answered after {took:.1f} s, not as it ended"
        again = time.monotonic()
        assert http("GET", f"{base}{headers['Location']}?wait=8")[1] == answer
        assert time.monotonic() - again < 6


# --------------------------------------------------------------- the SAQ worker's Redis reads


@pytest.mark.parametrize("sweep_s", [1, 5, 30])
def test_the_saq_workers_reads_outwait_its_blocking_dequeue(sweep_s):
    # redis-py 8 reads within 5 s by default, the dequeue's own length at the default sweep
    from services.async_app.job_queue import worker_redis

    settings = Settings(queue_sweep_s=sweep_s)
    read_s = worker_redis(settings).connection_pool.connection_kwargs["socket_timeout"]
    assert read_s is not None and read_s >= sweep_s + settings.redis_timeout_s


@pytest.mark.slow
def test_an_idle_saq_dequeue_ends_by_redis_and_keeps_its_connection(private_redis):
    """The worker's dequeue on an empty queue, as long as the default sweep (5 s): Redis ends it
    (None), the client does not give up first (a read timeout there races Redis's, and a job
    handed to the dequeue that gave up is worked by nobody until a sweep retries it), and the
    next dequeue runs on the same connection."""
    import asyncio

    from services.async_app.job_queue import _queue, worker_redis

    settings = Settings(redis_url=private_redis.url)

    async def dequeue_twice():
        client = worker_redis(settings)
        queue = _queue(client, settings)
        try:
            first = await queue.dequeue(timeout=settings.queue_sweep_s)
            ids = await client.client_id()
            second = await queue.dequeue(timeout=1)
            return first, second, ids, await client.client_id()
        finally:
            await client.aclose()

    first, second, id_before, id_after = asyncio.run(dequeue_twice())
    assert first is None and second is None
    assert id_before == id_after  # one connection: none was dropped on a timeout
