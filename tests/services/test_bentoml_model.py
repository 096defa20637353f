"""The BentoML model server (services/bentoml_model/) as the deployment runs it: its own venv,
BentoML's arbiter and two workers sharing one device slot, the lab's contract in front.

Batches are read from the answers (each says its batch's size and the seconds its batch slept),
not from the debug endpoint, which counts per worker. The device bound, two ways: batches that
hold the one slot in turn cannot all finish sooner than the sum of their own sleeps (a bound
from the counted batches; on its own it cannot tell the device from BentoML's one batch at a
time per worker, as the kernel may hand every connection to one worker), and while this test
holds the one slot itself no request is answered at all, whichever worker took it.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from services import bentoml_model, device
from tests.conftest import ROOT, free_port, start_bentoml, start_service, stop, wait_until
from tests.services.test_device import concurrently, get, post

pytestmark = pytest.mark.slow

# Drawn per batch (min < max), so two batches' answers tell them apart by their `detail`.
SLEEP_MIN_S, SLEEP_MAX_S = 0.25, 0.27
MAX_BATCH = 4
ENV = {"SCORING_LAB_DEVICE_SLOTS": "1", "SCORING_LAB_WORKERS": "2",
       "SCORING_LAB_SLEEP_MIN_S": str(SLEEP_MIN_S), "SCORING_LAB_SLEEP_MAX_S": str(SLEEP_MAX_S),
       "SCORING_LAB_MODEL_BATCH_MAX_SIZE": str(MAX_BATCH),
       # Far above what these requests wait: BentoML's 503 is not what these tests look at.
       "SCORING_LAB_BENTOML_MAX_LATENCY_MS": "30000"}
ERROR_KEYS = {"error", "message", "status"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server's URL and the folder its device FIFO is made in (its TMPDIR)."""
    logs = tmp_path_factory.mktemp("bentoml")
    tmp = logs / "tmp"
    tmp.mkdir()
    port = free_port()
    process = start_bentoml(port, {**ENV, "TMPDIR": str(tmp)}, logs / "bentoml.log")
    yield f"http://127.0.0.1:{port}", tmp
    stop(process, timeout=20)


@pytest.fixture(scope="module")
def bentoml_url(server):
    return server[0]


def send(url: str, body: bytes, content_type: str = "application/json",
         method: str = "POST") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("arch", ["sync", "async"])
def test_answers_a_prediction_in_the_model_apis_shape(bentoml_url, arch):
    assert get(f"{bentoml_url}/api/v1/healthcheck") == {"status": "OK"}
    status, answer = post(f"{bentoml_url}/api/v1/ml/{arch}/predict", b"[1, 3]")
    assert status == 200, answer
    assert set(answer) == {"detail", "input_mean", "batch_size"}, answer
    assert answer["input_mean"] == 2 and 1 <= answer["batch_size"] <= MAX_BATCH, answer
    assert SLEEP_MIN_S <= answer["detail"] <= SLEEP_MAX_S + 0.0005 * (MAX_BATCH - 1), answer
    debug = get(f"{bentoml_url}/api/v1/debug/model")
    assert debug["batching"] == "bentoml" and debug["device_slots"] == 1, debug


def test_concurrent_requests_form_batches_that_take_turns_on_the_device(bentoml_url):
    n = 16
    bodies = [json.dumps([100 + i - 1, 100 + i + 1]).encode() for i in range(n)]
    elapsed, answers = concurrently(f"{bentoml_url}/api/v1/ml/async/predict", bodies)
    batches: dict[float, list[int]] = {}  # a batch's sleep -> its items' batch_size
    for i, (status, answer) in enumerate(answers):
        assert status == 200, answer
        assert answer["input_mean"] == 100 + i, (i, answer)  # its own item's answer
        batches.setdefault(answer["detail"], []).append(answer["batch_size"])
    sizes = sorted(len(items) for items in batches.values())
    print(f"\nBentoML, 2 workers, 1 slot, {n} concurrent requests: {elapsed:.3f} s, "
          f"batch sizes {sizes}")
    # Each batch's items agree on its size, and it is the number of answers that slept with it.
    for items in batches.values():
        assert set(items) == {len(items)}, batches
    assert sum(sizes) == n and max(sizes) > 1 and max(sizes) <= MAX_BATCH, sizes
    # One slot: the batches held it one after another, so the last answer came no sooner than
    # the sum of their sleeps (counted from the answers, each at least its base sleep).
    assert elapsed >= sum(batches) - 0.005, (elapsed, sorted(batches))
    # Every slot back, seen from whichever worker answers.
    assert get(f"{bentoml_url}/api/v1/debug/model")["device_free_slots"] == 1


@pytest.mark.parametrize(("body", "content_type", "status", "code"), [
    (b"[1,", "application/json", 400, "invalid_json"),
    (b"[NaN]", "application/json", 400, "invalid_json"),
    (b"[]", "application/json", 422, "invalid_payload"),
    (b'["x"]', "application/json", 422, "invalid_payload"),
    (b'{"a": 1}', "application/json", 422, "invalid_payload"),
    (b"[1]", "text/plain", 415, "unsupported_media_type"),
    (b"[" + b"1," * 40_000 + b"1]", "application/json", 413, "body_too_large"),
])
def test_bad_input_is_refused_in_the_labs_shape(bentoml_url, body, content_type, status, code):
    answer_status, answer = send(f"{bentoml_url}/api/v1/ml/sync/predict", body, content_type)
    assert (answer_status, answer.get("error")) == (status, code), answer
    assert set(answer) == ERROR_KEYS and answer["status"] == status, answer


def test_only_the_labs_paths_lead_to_the_batcher(bentoml_url):
    status, answer = send(f"{bentoml_url}/api/v1/ml/async/predict", b"", method="GET")
    assert (status, answer["error"]) == (405, "method_not_allowed"), answer
    # BentoML's own route of the batchable API is not a way around the lab's checks.
    status, answer = send(f"{bentoml_url}/_bentoml/predict_batch", b"[[1]]")
    assert (status, answer["error"]) == (404, "not_found"), answer


@pytest.mark.parametrize("arch", ["sync", "async"])
def test_a_scoring_handler_targets_it_by_its_model_url(bentoml_url, seeded_redis, tmp_path,
                                                        arch):
    port = free_port()
    process = start_service("scoring", arch, port,
                            {"SCORING_LAB_MODEL_URL": bentoml_url,
                             "SCORING_LAB_REDIS_URL": seeded_redis.url,
                             "SCORING_LAB_WORKERS": "1"}, tmp_path / f"scoring-{arch}.log")
    try:
        status, answer = post(f"http://127.0.0.1:{port}/api/v1/ml/{arch}/predict?entity=7",
                              b"[5.1, 3.5, 1.4, 0.2]")
    finally:
        stop(process)
    assert status == 200, answer
    # The mean of the model's two answers: each a batch's sleep.
    assert SLEEP_MIN_S <= answer["detail"] <= SLEEP_MAX_S + 0.0005 * (MAX_BATCH - 1), answer


def test_refuses_to_start_with_a_batch_bentoml_cannot_have(tmp_path):
    python = ROOT / bentoml_model.VENV / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{python} is missing: `make setup` makes it")
    env = {"SCORING_LAB_MODEL_BATCH_MAX_SIZE": "1", "SCORING_LAB_PORT": str(free_port()),
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([str(python), "-m", "services.bentoml_model"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "SCORING_LAB_MODEL_BATCH_MAX_SIZE=1" in done.stderr



def test_no_batch_runs_while_another_process_holds_the_one_slot(server):
    """The slot is the service's, not a worker's: while this test holds the one token (as a
    batch of another worker would), no request is answered; once it is back, all are."""
    url, tmp = server
    (fifo,) = tmp.glob("scoring-lab-device-*/slots")  # the one the arbiter made
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    answers: list = []
    threads: list[threading.Thread] = []

    def take() -> bool:
        try:
            return os.read(fd, 1) == device.TOKEN
        except BlockingIOError:
            return False

    try:
        wait_until(take, 10, "the device's one slot")
        threads = [threading.Thread(target=lambda i=i: answers.append(
            post(f"{url}/api/v1/ml/sync/predict", json.dumps([i]).encode())))
            for i in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(4 * SLEEP_MAX_S)  # time for several batches, had any slot been free
        answered_while_held = len(answers)
    finally:
        os.write(fd, device.TOKEN)
        os.close(fd)
    for thread in threads:
        thread.join(30)
    assert answered_while_held == 0, answers
    assert [status for status, _ in answers] == [200] * 6, answers


def test_a_bad_item_does_not_poison_its_batch(bentoml_url):
    good = [json.dumps([300 + i - 1, 300 + i + 1]).encode() for i in range(6)]
    bad = [b"[1,", b"[]", b'["x"]']
    _, answers = concurrently(f"{bentoml_url}/api/v1/ml/async/predict", [*good, *bad])
    for i, (status, answer) in enumerate(answers[:len(good)]):
        assert status == 200 and answer["input_mean"] == 300 + i, (i, answer)
    assert [status for status, _ in answers[len(good):]] == [400, 422, 422], answers


def test_a_batch_past_the_model_timeout_answers_every_item(tmp_path):
    """The model's deadline (MODEL_TIMEOUT_S, 0.05 s here) under the 0.25 s sleeps: every batch
    overruns it, and each of its items is answered at once with the lab's 504."""
    port = free_port()
    process = start_bentoml(port, {**ENV, "SCORING_LAB_WORKERS": "1",
                                   "SCORING_LAB_MODEL_TIMEOUT_S": "0.05"},
                            tmp_path / "bentoml.log")
    try:
        url = f"http://127.0.0.1:{port}"
        _, answers = concurrently(f"{url}/api/v1/ml/async/predict",
                                  [json.dumps([i]).encode() for i in range(6)])
        debug = get(f"{url}/api/v1/debug/model")
    finally:
        stop(process, timeout=20)
    for status, answer in answers:
        assert (status, answer["error"]) == (504, "prediction_timeout"), answer
        assert set(answer) == ERROR_KEYS, answer
    assert debug["failed_batches"] == debug["batches"] >= 1, debug
    assert debug["device_free_slots"] == 1, debug  # the slot came back each time


def test_what_bentoml_cannot_serve_within_its_max_latency_is_refused_at_once(tmp_path):
    """A max latency (0.1 s) under one batch's sleep (0.25 s): BentoML's batcher runs a request
    that finds it idle and refuses those it predicts would wait past the bound, each with its
    503 ("Service Busy") in the lab's shape (service_busy), never run."""
    port = free_port()
    process = start_bentoml(port, {**ENV, "SCORING_LAB_WORKERS": "1",
                                   "SCORING_LAB_BENTOML_MAX_LATENCY_MS": "100"},
                            tmp_path / "bentoml.log")
    try:
        url = f"http://127.0.0.1:{port}"
        _, answers = concurrently(f"{url}/api/v1/ml/async/predict",
                                  [json.dumps([i]).encode() for i in range(12)])
        debug = get(f"{url}/api/v1/debug/model")
    finally:
        stop(process, timeout=20)
    refused = [answer for status, answer in answers if status == 503]
    served = [answer for status, answer in answers if status == 200]
    print(f"\nBentoML, max latency 100 ms, 12 concurrent 250 ms requests: {len(refused)} refused")
    assert len(refused) + len(served) == 12, answers
    assert refused and all(a["error"] == "service_busy" and set(a) == ERROR_KEYS
                           for a in refused), answers
    # Only the served ones reached the model.
    assert debug["items"] == len(served), (debug, len(served))
