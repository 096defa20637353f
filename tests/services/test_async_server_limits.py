"""The async server's own limits (services/async_app/protocol.py, limits.py) on a real
uvicorn: incomplete requests time out, heads and bodies are refused before they are read whole.
"""

from __future__ import annotations

import json
import socket
import time

import psutil
import pytest

from tests.conftest import free_port, start_service, stop
from tests.fuzz.client import exchange

pytestmark = pytest.mark.slow

PREDICT = "/api/v1/ml/async/predict"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    port = free_port()
    process = start_service("model", "async", port, {"SCORING_LAB_WORKERS": "1"},
                            tmp_path_factory.mktemp("limits") / "model.log")
    yield port, process
    stop(process)


def lab_error(reply, status: int) -> None:
    assert reply.status == status, (reply.outcome, reply.body[:200])
    body = json.loads(reply.body)
    assert set(body) == {"error", "message", "status"} and body["status"] == status


def test_an_idle_connection_is_closed(model):
    port, _ = model
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        assert sock.recv(1) == b""  # closed by the server, no answer
    assert time.monotonic() - started < 5 + 3


@pytest.mark.parametrize("cut", [
    b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\n",  # headers cut off
    b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 20\r\n\r\n[1,",  # body cut off
    b"\r\n",  # an empty line the parser skips: the clock still runs
])
def test_an_incomplete_request_is_a_408_at_the_request_timeout(model, cut):
    port, _ = model
    reply = exchange(port, [cut], "POST", timeout_s=15)
    lab_error(reply, 408)
    assert 2.5 < reply.elapsed_s < 3 + 3


def test_a_slowloris_head_is_cut_at_the_request_timeout(model):
    port, _ = model
    head = b"GET /api/v1/healthcheck HTTP/1.1\r\n" + b"X-A: b\r\n" * 12
    reply = exchange(port, [head[i:i + 8] for i in range(0, len(head), 8)], "GET",
                     pause_s=0.3, timeout_s=15)
    lab_error(reply, 408)


def test_oversized_heads_are_refused_while_they_stream(model):
    port, _ = model
    long_field = (b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000
                  + b"\r\n\r\n")
    lab_error(exchange(port, [long_field], "GET"), 400)
    # One 32 MiB header: refused once 64 KiB of head have arrived, not buffered whole.
    huge = [b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: x\r\nX-A: "] + [b"a" * 65536] * 512
    reply = exchange(port, huge, "GET")
    assert reply.status == 431 or reply.outcome == "closed", reply.outcome
    if reply.status is not None:
        lab_error(reply, 431)


def test_a_chunked_body_over_the_limit_is_refused_before_it_is_read_whole(model):
    port, process = model
    master = psutil.Process(process.pid)
    worker = (master.children() or [master])[0]  # one worker: uvicorn serves in-process
    rss_before = worker.memory_info().rss
    head = (b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"1" * 65536 + b"\r\n"
    started = time.monotonic()
    reply = exchange(port, [head] + [chunk] * 1024 + [b"0\r\n\r\n"], "POST")  # 64 MiB
    # The 413 closes the connection: the client may see it, or a reset while still sending.
    assert reply.status == 413 or reply.outcome == "closed", reply.outcome
    if reply.status is not None:
        lab_error(reply, 413)
    assert time.monotonic() - started < 10
    assert worker.memory_info().rss - rss_before < 16 * 1024 * 1024
