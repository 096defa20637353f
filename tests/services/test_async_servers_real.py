"""The async apps on the other servers of issue 26, through real servers and real Redis:
uvicorn with h11, uvicorn on asyncio's loop. The public interface answers as on the default
build; h11 keeps the lab's limits (services/async_app/h11_protocol.py). gunicorn's own ASGI
worker is refused at startup (services/serve.py says why), checked here on the real command.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, free_port, start_service, stop
from tests.fuzz.client import exchange
from tests.services.test_real_servers import post

pytestmark = pytest.mark.slow

PREDICT = "/api/v1/ml/async/predict"
VARIANTS = {
    "uvicorn-h11": {"SCORING_LAB_UVICORN_HTTP": "h11"},
    "uvicorn-asyncio": {"SCORING_LAB_UVICORN_LOOP": "asyncio"},
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def stack(request, seeded_redis, tmp_path_factory):
    """Model API and scoring handler of the async stack on one server variant."""
    logs = tmp_path_factory.mktemp(request.param)
    env = {"SCORING_LAB_WORKERS": "2", **VARIANTS[request.param]}
    ports = {"model": free_port(), "scoring": free_port()}
    started = []
    try:
        started.append(start_service("model", "async", ports["model"], env, logs / "model.log"))
        started.append(start_service(
            "scoring", "async", ports["scoring"],
            {**env, "SCORING_LAB_REDIS_URL": seeded_redis.url,
             "SCORING_LAB_MODEL_URL": f"http://127.0.0.1:{ports['model']}"},
            logs / "scoring.log"))
        yield request.param, ports
    finally:
        for process in started:
            stop(process)


def url(ports, name, query=""):
    return f"http://127.0.0.1:{ports[name]}{PREDICT}{query}"


def lab_error(status_body, status: int) -> None:
    got, body = status_body
    assert got == status, body
    assert set(body) == {"error", "message", "status"} and body["status"] == status


def test_scoring_and_model_answer(stack):
    _, ports = stack
    status, body = post(url(ports, "scoring"))
    assert status == 200 and set(body) == {"detail"} and 0.040 <= body["detail"] <= 0.050
    status, body = post(url(ports, "model"))
    assert status == 200 and set(body) == {"detail", "input_mean", "batch_size"}


def test_bad_input_is_the_lab_error_shape(stack):
    _, ports = stack
    lab_error(post(url(ports, "scoring"), b"[1,"), 400)
    lab_error(post(url(ports, "scoring"), b"[]"), 422)
    lab_error(post(url(ports, "scoring"), content_type="text/plain"), 415)
    lab_error(post(url(ports, "scoring", "?entity=404404")), 404)
    lab_error(post(url(ports, "model"), b"[1,"), 400)


def test_a_request_the_parser_refuses_is_the_lab_error_shape(stack):
    variant, ports = stack
    reply = exchange(ports["model"], [b"GET /api/v1/healthcheck HTTP/1.1\r\nBad Header\r\n\r\n"],
                     "GET")
    assert reply.status == 400, (reply.outcome, reply.body[:200])
    body = json.loads(reply.body)
    assert set(body) == {"error", "message", "status"} and body["status"] == 400


@pytest.mark.parametrize(("arch", "env", "named"), [
    ("async", {"SCORING_LAB_SERVER": "gunicorn-asgi"}, "SCORING_LAB_SERVER=gunicorn-asgi"),
    ("sync", {"SCORING_LAB_SERVER": "gunicorn-asgi"}, "SCORING_LAB_SERVER=gunicorn-asgi"),
    ("sync", {"SCORING_LAB_UVICORN_HTTP": "h11"}, "SCORING_LAB_UVICORN_HTTP=h11"),
])
def test_a_refused_server_is_one_line_at_startup(arch, env, named):
    result = subprocess.run(
        [sys.executable, "-m", "services", "serve", "--role", "model", "--arch", arch],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "SCORING_LAB_PORT": str(free_port()), **env},
    )
    assert result.returncode == 2, result.stderr[-500:]
    assert result.stderr.strip().startswith(f"error: {named}")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ h11's limits (uvicorn)


@pytest.fixture(scope="module")
def h11_model(tmp_path_factory):
    port = free_port()
    process = start_service("model", "async", port,
                            {"SCORING_LAB_WORKERS": "1", "SCORING_LAB_UVICORN_HTTP": "h11"},
                            tmp_path_factory.mktemp("h11-limits") / "model.log")
    yield port
    stop(process)


def reply_error(reply, status: int) -> None:
    assert reply.status == status, (reply.outcome, reply.body[:200])
    body = json.loads(reply.body)
    assert set(body) == {"error", "message", "status"} and body["status"] == status


def test_h11_closes_an_idle_connection(h11_model):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", h11_model), timeout=20) as sock:
        assert sock.recv(1) == b""
    assert time.monotonic() - started < 5 + 3


@pytest.mark.parametrize("cut", [
    b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\n",
    b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 20\r\n\r\n[1,",
], ids=["head", "body"])
def test_h11_answers_an_incomplete_request_408_at_the_request_timeout(h11_model, cut):
    reply = exchange(h11_model, [cut], "POST", timeout_s=15)
    reply_error(reply, 408)
    assert 2.5 < reply.elapsed_s < 3 + 3


def test_h11_refuses_an_empty_line_before_the_request_at_once(h11_model):
    """httptools skips it and waits (408); h11 refuses it as meinheld does (400)."""
    reply = exchange(h11_model, [b"\r\n"], "POST", timeout_s=15)
    reply_error(reply, 400)
    assert reply.elapsed_s < 2


def test_h11_refuses_meinheld_sized_fields_and_a_streaming_head_over_the_limit(h11_model):
    long_field = (b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000
                  + b"\r\n\r\n")
    reply_error(exchange(h11_model, [long_field], "GET"), 400)
    many = b"GET /api/v1/healthcheck HTTP/1.1\r\n" + b"X-A: b\r\n" * 130 + b"\r\n"
    reply_error(exchange(h11_model, [many], "GET"), 400)
    huge = [b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: x\r\nX-A: "] + [b"a" * 65536] * 512
    reply = exchange(h11_model, huge, "GET")
    assert reply.status == 431 or reply.outcome == "closed", reply.outcome
    if reply.status is not None:
        reply_error(reply, 431)


def test_h11_serves_again_after_the_refusals(h11_model):
    reply = exchange(h11_model, [b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: x\r\n\r\n"], "GET")
    assert reply.status == 200


def test_h11_answers_pipelined_requests_and_times_out_a_cut_off_one_after_them(h11_model):
    get = b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", h11_model), timeout=15) as sock:
        sock.sendall(get + get + b"GET /api/v1/healthcheck HTTP/1.1\r\nHo")
        started = time.monotonic()
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200") == 2
    assert received.count(b"HTTP/1.1 408") == 1 and received.rstrip().endswith(b'"status": 408}')
    assert 2.5 < time.monotonic() - started < 3 + 3
