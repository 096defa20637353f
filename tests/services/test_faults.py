"""The fault matrix: every fault of a dependency is answered within its deadline, in the lab's
error shape, by the real servers of both architectures, and the service recovers by itself.

Model API: down, hanging, trickling (one byte per 1.5 s), garbage, redirecting. Redis: down,
frozen (SIGSTOP), restarted. Async only: a SIGKILLed uvicorn worker (the sync stack's killed
worker is handled on the meinheld branch). Measured answer times are printed (``-s``).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import psutil
import pytest

from tests.conftest import ROOT, free_port, start_redis, start_service, stop, wait_until

pytestmark = pytest.mark.slow

MODEL_TIMEOUT_S = 2.0
REDIS_TIMEOUT_S = 1.0
# Generous: the machine is shared. An answer must come before its deadline plus this.
MARGIN_S = 2.5
TIMES: list[tuple[str, str, int, float]] = []


class BadModel:
    """A model API on 127.0.0.1 whose behaviour the test sets: ok, hang, trickle, garbage,
    redirect. Raw sockets, so it can misbehave mid-answer."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            data = b""
            try:
                while True:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                    head, _, data = data.partition(b"\r\n\r\n")
                    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                      if line.lower().startswith(b"content-length")))
                    while len(data) < length:
                        data += conn.recv(65536)
                    data = data[length:]
                    self._answer(conn)
            except (OSError, StopIteration, ValueError):
                return

    def _answer(self, conn: socket.socket) -> None:
        mode = self.mode
        ok = b'{"detail": 0.04}'
        if mode == "ok":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(ok), ok))
        elif mode == "hang":
            self.closed.wait(60)
        elif mode == "trickle":
            answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(ok), ok))
            for byte in answer:
                if self.closed.wait(1.5):
                    return
                conn.sendall(bytes([byte]))
        elif mode == "garbage":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n\x00\xffgarbage")
        elif mode == "redirect":
            conn.sendall(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:1/\r\n"
                         b"Content-Length: 0\r\n\r\n")

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


def post(port: int, arch: str, timeout: float = 30) -> tuple[int, dict, float]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/ml/{arch}/predict?entity=1",
        data=b"[5.1,3.5,1.4,0.2]", method="POST", headers={"Content-Type": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    return status, json.loads(body), time.monotonic() - started


def seed(url: str) -> None:
    subprocess.run([sys.executable, "-m", "services", "seed", "--redis-url", url,
                    "--entities", "5"], check=True, cwd=ROOT, capture_output=True)


@pytest.fixture(scope="module")
def bad_model():
    model = BadModel()
    yield model
    model.close()


@pytest.fixture(scope="module", params=["sync", "async"])
def lab(request, bad_model, tmp_path_factory):
    """A private Redis and one scoring service of the arch calling the bad model."""
    arch = request.param
    tmp = tmp_path_factory.mktemp(f"faults-{arch}")
    redis = start_redis(tmp)
    seed(redis.url)
    port = free_port()
    env = {"SCORING_LAB_WORKERS": "2", "SCORING_LAB_REDIS_URL": redis.url,
           "SCORING_LAB_MODEL_URL": bad_model.url,
           "SCORING_LAB_MODEL_TIMEOUT_S": str(MODEL_TIMEOUT_S),
           "SCORING_LAB_REDIS_TIMEOUT_S": str(REDIS_TIMEOUT_S)}
    process = start_service("scoring", arch, port, env, tmp / "scoring.log")
    state = {"arch": arch, "port": port, "redis": redis, "tmp": tmp, "process": process}
    yield state
    stop(process)
    stop(state["redis"].process)


def answered(lab, fault: str, status: int, error: str, deadline_s: float) -> float:
    got, body, elapsed = post(lab["port"], lab["arch"])
    TIMES.append((fault, lab["arch"], got, elapsed))
    assert (got, body.get("error")) == (status, error), (fault, body)
    assert set(body) == {"error", "message", "status"} and body["status"] == got
    assert elapsed < deadline_s + MARGIN_S, f"{fault}: answered after {elapsed:.1f} s"
    return elapsed


def recovers(lab, what: str, within_s: float = 15) -> None:
    """Serves 200 again within ``within_s``. The first request after a fault may meet meinheld's
    stale-clock drop (docs/services.md "Known limits of meinheld": a connection accepted just
    after a request that held the worker ~2 s is closed unread, or answered meinheld's HTML 408
    if part of it was read): not the lab's answer, so not parsed as one; the poll tries again."""
    seen: list[object] = []

    def serves() -> bool:
        try:
            seen.append(post(lab["port"], lab["arch"])[0])
        except (OSError, http.client.HTTPException, json.JSONDecodeError) as error:
            seen.append(type(error).__name__)
        return seen[-1] == 200

    try:
        wait_until(serves, within_s, f"{lab['arch']} scoring to answer 200 again after {what}")
    except TimeoutError as error:
        raise AssertionError(f"{error}; answers seen: {seen}") from None


@pytest.mark.parametrize("mode,status,error,deadline", [
    ("hang", 504, "model_timeout", MODEL_TIMEOUT_S),
    ("trickle", 504, "model_timeout", MODEL_TIMEOUT_S),
    ("garbage", 502, "model_bad_response", MODEL_TIMEOUT_S),
    ("redirect", 502, "model_bad_response", MODEL_TIMEOUT_S),
])
def test_a_bad_model_is_answered_within_the_model_deadline(lab, bad_model, mode, status,
                                                          error, deadline):
    bad_model.mode = "ok"
    assert post(lab["port"], lab["arch"])[0] == 200
    bad_model.mode = mode
    try:
        elapsed = answered(lab, f"model {mode}", status, error, deadline)
        if mode in ("hang", "trickle"):
            # The deadline bounds the whole call: not sooner than it, not a read later.
            assert elapsed >= MODEL_TIMEOUT_S * 0.9
    finally:
        bad_model.mode = "ok"
    recovers(lab, f"model {mode}")


def test_a_model_that_is_down_is_a_502_at_once(lab, tmp_path):
    port = free_port()  # nothing listens there
    env = {"SCORING_LAB_WORKERS": "1", "SCORING_LAB_REDIS_URL": lab["redis"].url,
           "SCORING_LAB_MODEL_URL": f"http://127.0.0.1:{free_port()}"}
    process = start_service("scoring", lab["arch"], port, env, tmp_path / "scoring.log")
    try:
        answered({**lab, "port": port}, "model down", 502, "model_unavailable", MODEL_TIMEOUT_S)
    finally:
        stop(process)


def test_redis_frozen_down_and_restarted(lab, bad_model):
    bad_model.mode = "ok"
    redis = lab["redis"]
    assert post(lab["port"], lab["arch"])[0] == 200
    os.kill(redis.process.pid, signal.SIGSTOP)
    try:
        answered(lab, "redis frozen", 503, "feature_store_unavailable", REDIS_TIMEOUT_S)
    finally:
        os.kill(redis.process.pid, signal.SIGCONT)
    recovers(lab, "redis frozen")

    port = redis.port
    stop(redis.process)
    answered(lab, "redis down", 503, "feature_store_unavailable", REDIS_TIMEOUT_S)

    # Restarted on the same port (and reseeded, as the deployment's seeding does): the pooled
    # connections are dead; the service reconnects by itself.
    restarted = start_redis(lab["tmp"] / "restart", port=port)
    lab["redis"] = restarted
    seed(restarted.url)
    started = time.monotonic()
    recovers(lab, "redis restart")
    TIMES.append(("redis restarted: back to 200", lab["arch"], 200, time.monotonic() - started))


def test_a_killed_async_worker_is_replaced(lab, bad_model):
    if lab["arch"] != "async":
        pytest.skip("the sync stack's killed worker is the meinheld branch's (issue 10)")
    bad_model.mode = "ok"
    master = psutil.Process(lab["process"].pid)
    before = {p.pid for p in master.children()}
    assert len(before) >= 2
    victim = max(before)
    os.kill(victim, signal.SIGKILL)
    started = time.monotonic()
    # The other worker keeps answering while uvicorn replaces the dead one.
    assert post(lab["port"], lab["arch"])[0] == 200

    def replaced() -> bool:
        now = {p.pid for p in master.children() if p.status() != psutil.STATUS_ZOMBIE}
        return victim not in now and len(now) >= len(before)

    wait_until(replaced, 30, "uvicorn to replace the killed worker")
    recovers(lab, "a killed worker")
    TIMES.append(("async worker SIGKILL: replaced", "async", 200, time.monotonic() - started))


@pytest.fixture(scope="module", autouse=True)
def print_the_matrix():
    yield
    for fault, arch, status, elapsed in TIMES:
        print(f"\n{fault:32s} {arch:6s} {status}  {elapsed:6.2f} s", end="")
