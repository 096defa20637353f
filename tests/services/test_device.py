"""The device and the micro-batcher through the real servers (gunicorn+meinheld, uvicorn), as
the deployment runs them: several workers, the master's device shared by all of them.

The time bounds from below are exact consequences of exclusivity (k slots held for a fixed
sleep cannot serve N requests faster than ceil(N / k) sleeps); the bounds from above are only
"clearly more parallel than that", with wide margins for a loaded machine.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import ROOT, free_port, start_service, stop

pytestmark = pytest.mark.slow

SLEEP_S = 0.1  # a fixed base (min = max), so exclusivity shows as a sum of sleeps
N = 8
# Enough workers that they would serve the N requests in about two sleeps without a device:
# the device, not the worker count, is what bounds them. An async worker serves them all at
# once; two (uvicorn's spawned processes) only where the slot's exclusivity across workers is
# the point: each takes seconds to start on a loaded machine.
WORKERS = {"sync": 4, "async": 1}


def post(url: str, body: bytes, timeout: float = 15) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def concurrently(url: str, bodies: list[bytes]) -> tuple[float, list[tuple[int, dict]]]:
    """POST every body at once (one thread and connection each, released together): the
    seconds until the last answer, and the answers in the bodies' order."""
    answers: list = [None] * len(bodies)
    start = threading.Barrier(len(bodies) + 1)

    def one(i: int) -> None:
        start.wait()
        answers[i] = post(url, bodies[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join(30)
    return time.perf_counter() - began, answers


class Servers:
    """Model APIs started on demand for this module, stopped at its end."""

    def __init__(self, logs) -> None:
        self.logs = logs
        self.started: dict[tuple, tuple[str, subprocess.Popen]] = {}

    def model(self, arch: str, **env: str | int) -> str:
        key = (arch, *sorted(env.items()))
        if key not in self.started:
            port = free_port()
            full = {"SCORING_LAB_SLEEP_MIN_S": str(SLEEP_S),
                    "SCORING_LAB_SLEEP_MAX_S": str(SLEEP_S),
                    **{f"SCORING_LAB_{k.upper()}": str(v) for k, v in env.items()}}
            name = "-".join(f"{k}{v}" for k, v in sorted(env.items()))
            process = start_service("model", arch, port, full, self.logs / f"{arch}-{name}.log")
            self.started[key] = (f"http://127.0.0.1:{port}", process)
        return self.started[key][0]

    def close(self) -> None:
        for _, process in self.started.values():
            stop(process)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    started = Servers(tmp_path_factory.mktemp("device-logs"))
    yield started
    started.close()


def bodies(n: int, offset: int = 0) -> list[bytes]:
    """Distinct items: item i's values have the mean offset + i."""
    return [json.dumps([offset + i - 1, offset + i + 1]).encode() for i in range(n)]


def check_own_answers(answers, offset: int = 0, batch_size_max: int = 1) -> None:
    for i, (status, body) in enumerate(answers):
        assert status == 200, body
        assert set(body) == {"detail", "input_mean", "batch_size"}, body
        assert body["input_mean"] == offset + i, (i, body)  # its own item's answer
        assert 1 <= body["batch_size"] <= batch_size_max, body
        assert body["detail"] >= SLEEP_S


@pytest.mark.parametrize("arch", ["sync", "async"])
def test_device_slots_bound_concurrency_across_workers(servers, arch):
    measured = {}
    for slots in (1, 2, 0):
        workers = 2 if arch == "async" and slots == 1 else WORKERS[arch]
        url = servers.model(arch, device_slots=slots, workers=workers)
        elapsed, answers = concurrently(f"{url}/api/v1/ml/{arch}/predict", bodies(N))
        check_own_answers(answers)
        measured[slots] = elapsed
        stats = get(f"{url}/api/v1/debug/model")
        # Every slot back (no token lost), seen from whichever worker answered.
        assert stats["device_free_slots"] == (slots or None), stats
    print(f"\n{arch}: {N} concurrent requests of {SLEEP_S * 1000:g} ms: "
          + ", ".join(f"{k} slot(s) {s:.3f} s" for k, s in measured.items()) + " (0: no device)")
    # k slots held one sleep each: never faster than ceil(N / k) sleeps, whichever worker
    # serves; with one slot the workers take turns.
    assert measured[1] >= N * SLEEP_S, measured
    assert measured[2] >= math.ceil(N / 2) * SLEEP_S, measured
    # Two slots do run two at a time; no device is today's model, bound by the workers only
    # (relative bounds: a loaded machine slows every run alike, and meinheld's workers take
    # uneven shares of the connections).
    assert measured[2] < 0.8 * measured[1], measured
    assert measured[0] < 0.7 * measured[1], measured


MICRO = {"device_slots": 1, "model_batching": "micro", "model_batch_max_size": 4,
         "model_batch_max_wait_ms": 30, "workers": 1}


def test_micro_batches_form_and_each_caller_gets_its_own_answer(servers):
    url = servers.model("async", **MICRO)
    predict = f"{url}/api/v1/ml/async/predict"
    before = get(f"{url}/api/v1/debug/model")
    elapsed, answers = concurrently(predict, bodies(10, offset=100))
    check_own_answers(answers, offset=100, batch_size_max=4)
    stats = get(f"{url}/api/v1/debug/model")
    sizes = {int(size): n - before["batch_sizes"].get(size, 0)
             for size, n in stats["batch_sizes"].items()}
    sizes = {size: n for size, n in sizes.items() if n}
    print(f"\nmicro-batcher, 1 slot, 10 concurrent requests: {elapsed:.3f} s, batch sizes {sizes}")
    assert stats["items"] - before["items"] == 10 and 1 < max(sizes) <= 4, (before, stats)
    # The answers agree with the batches the server counted.
    assert sorted(a["batch_size"] for _, a in answers) == sorted(
        size for size, n in sizes.items() for _ in range(size * n))
    # A batch never waits for more requests past the max wait (the event loop's lag aside).
    assert stats["form_wait_max_ms"] <= 30 + 25, stats
    # One slot, batches of up to 4: at least three device holds, far fewer than 10.
    assert 3 * SLEEP_S <= elapsed < 10 * SLEEP_S * 0.7, elapsed
    assert stats["device_free_slots"] == 1, stats

    # Alone, a request waits the whole max wait for company, then runs as a batch of one.
    began = time.perf_counter()
    status, alone = post(predict, b"[41, 43]")
    took = time.perf_counter() - began
    assert (status, alone["input_mean"], alone["batch_size"]) == (200, 42, 1), alone
    assert took >= SLEEP_S + 0.030, took


def test_a_bad_item_does_not_poison_its_batch(servers):
    url = servers.model("async", **MICRO)
    before = get(f"{url}/api/v1/debug/model")
    bad = {b"[1,": 400, b"[NaN]": 400, b'{"a": 1}': 422, b"[]": 422, b'["x"]': 422}
    good = bodies(6, offset=200)
    sent = [*good, *bad]
    _, answers = concurrently(f"{url}/api/v1/ml/async/predict", sent)
    check_own_answers(answers[:len(good)], offset=200, batch_size_max=4)
    for (status, body), (_, expected) in zip(answers[len(good):], bad.items(), strict=True):
        assert status == expected and set(body) == {"error", "message", "status"}, body
    stats = get(f"{url}/api/v1/debug/model")
    # Only the good ones were batched, and no batch failed.
    assert stats["items"] - before["items"] == len(good), (before, stats)
    assert stats["failed_batches"] == 0, stats


def test_sync_model_api_refuses_micro_batching(tmp_path):
    env = {"SCORING_LAB_MODEL_BATCHING": "micro", "SCORING_LAB_PORT": str(free_port()),
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "services", "serve", "--role", "model",
                           "--arch", "sync"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "SCORING_LAB_MODEL_BATCHING=micro" in done.stderr


def test_gevent_worker_waits_for_the_device_in_a_greenlet(servers):
    """One gevent worker, one slot: the requests take turns on the device, and while they
    wait (in gevent's patched select) the same worker still answers its health check."""
    url = servers.model("sync", device_slots=1, sync_worker="gevent", workers=1)
    health: list[float] = []

    def probe() -> None:
        time.sleep(SLEEP_S * 2)  # the predictions are queued on the device by then
        began = time.perf_counter()
        assert get(f"{url}/api/v1/healthcheck") == {"status": "OK"}
        health.append(time.perf_counter() - began)

    prober = threading.Thread(target=probe)
    prober.start()
    elapsed, answers = concurrently(f"{url}/api/v1/ml/sync/predict", bodies(N))
    prober.join(10)
    check_own_answers(answers)
    assert elapsed >= N * SLEEP_S, elapsed
    assert health, "the health check got no answer"
    print(f"\ngevent, 1 slot: {N} requests {elapsed:.3f} s, health check meanwhile "
          f"{health[0]:.3f} s")
    assert health[0] < N * SLEEP_S / 2, health  # not behind the device queue


def test_a_replaced_sync_worker_shares_the_same_device(servers):
    """A worker that exits (SIGTERM: gunicorn's graceful exit, its atexit handlers run) is
    replaced by the master; the replacement opens the same device and the slot stays one."""
    import psutil

    url = servers.model("sync", device_slots=1, workers=2, service="replaced")
    _, process = servers.started[("sync", ("device_slots", 1), ("service", "replaced"),
                                  ("workers", 2))]
    master = psutil.Process(process.pid)
    old = {child.pid for child in master.children()}
    victim = psutil.Process(min(old))
    victim.terminate()
    victim.wait(10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = {child.pid for child in master.children()}
        if len(now) == 2 and now != old:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"no replacement worker: {old} -> {now}")
    # Both workers serve (a replacement that could not open the device would not boot, and
    # gunicorn's master stops when a worker fails to boot); one slot still serialises them.
    for _ in range(3):
        elapsed, answers = concurrently(f"{url}/api/v1/ml/sync/predict", bodies(4))
        check_own_answers(answers)
        assert elapsed >= 4 * SLEEP_S, elapsed
    assert process.poll() is None
    assert get(f"{url}/api/v1/debug/model")["device_free_slots"] == 1
