"""All four apps through their real frameworks (Flask's test client, FastAPI's TestClient with
its lifespan), with a real Redis and a controllable model stub on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from services import features
from services.async_app import model_api as async_model
from services.async_app import scoring_api as async_scoring
from services.settings import Settings
from services.sync_app import model_api as sync_model
from services.sync_app import scoring_api as sync_scoring
from tests.conftest import free_port

BODY = b"[5.1,3.5,1.4,0.2]"
JSON = {"Content-Type": "application/json"}


class ModelStub:
    """A model API whose behaviour a test sets: answer, delay, or answer badly."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.reply: tuple[int, bytes] = (200, b'{"detail": 0.04}')
        self.bodies: list[list[float]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers["Content-Length"])
                stub.bodies.append(json.loads(self.rfile.read(length)))
                time.sleep(stub.delay_s)
                status, body = stub.reply
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def model_stub():
    stub = ModelStub()
    yield stub
    stub.close()


class Client:
    """One calling convention for both frameworks' test clients."""

    def __init__(self, arch: str, app_client) -> None:
        self.arch = arch
        self._client = app_client

    def post(self, body: bytes = BODY, headers=JSON, query: str = "") -> tuple[int, dict]:
        path = f"/api/v1/ml/{self.arch}/predict{query}"
        if self.arch == "sync":
            response = self._client.post(path, data=body, headers=headers)
            return response.status_code, response.get_json()
        response = self._client.post(path, content=body, headers=headers)
        return response.status_code, response.json()

    def get(self, path: str) -> tuple[int, dict]:
        response = self._client.get(path)
        if self.arch == "sync":
            return response.status_code, response.get_json()
        return response.status_code, response.json()


def open_client(arch: str, role: str, settings: Settings):
    factory = {
        ("sync", "model"): sync_model.create_app,
        ("sync", "scoring"): sync_scoring.create_app,
        ("async", "model"): async_model.create_app,
        ("async", "scoring"): async_scoring.create_app,
    }[(arch, role)]
    app = factory(settings)
    if arch == "sync":
        app.testing = True
        return Client(arch, app.test_client()), None
    test_client = TestClient(app, raise_server_exceptions=False)
    test_client.__enter__()  # runs the lifespan: the shared clients are created here
    return Client(arch, test_client), test_client


@pytest.fixture(params=["sync", "async"])
def arch(request) -> str:
    return request.param


@pytest.fixture
def make_client(arch):
    opened = []

    def make(role: str, **settings) -> Client:
        client, closer = open_client(arch, role, Settings(**settings))
        if closer is not None:
            opened.append(closer)
        return client

    yield make
    for closer in opened:
        closer.__exit__(None, None, None)


FAST = {"sleep_min_s": 0.001, "sleep_max_s": 0.002}


def test_model_predicts_by_sleeping_and_returns_the_sleep(make_client):
    client = make_client("model", sleep_min_s=0.04, sleep_max_s=0.05)
    started = time.perf_counter()
    status, body = client.post()
    elapsed = time.perf_counter() - started
    assert status == 200
    assert 0.04 <= body["detail"] <= 0.05
    assert elapsed >= body["detail"]
    # Its own item's answer (items may travel in batches), on demand a batch of one.
    assert body["input_mean"] == pytest.approx(2.55) and body["batch_size"] == 1
    status, stats = client.get("/api/v1/debug/model")
    assert status == 200 and stats["device_slots"] == 0 and stats["device_free_slots"] is None
    # the model it runs, named by the server itself (experiment 7's reports quote it)
    assert stats["model"]["sleep_ms"] == [40, 50] and stats["model"]["device_per_item_ms"] == 0.5


def test_health_and_index(make_client):
    for role in ("model", "scoring"):
        client = make_client(role, **FAST)
        assert client.get("/api/v1/healthcheck") == (200, {"status": "OK"})
        status, index = client.get("/")
        assert status == 200
        assert f"POST /api/v1/ml/{client.arch}/predict" in index["endpoints"]


def test_scoring_reads_features_and_averages_two_model_calls(make_client, seeded_redis, model_stub):
    model_stub.reply = (200, b'{"detail": 0.045}')
    client = make_client("scoring", redis_url=seeded_redis.url, model_url=model_stub.url)
    status, body = client.post(query="?entity=7")
    assert (status, body) == (200, {"detail": 0.045}), body
    assert len(model_stub.bodies) == 2
    assert model_stub.bodies[0] == [5.1, 3.5, 1.4, 0.2, *features.vector("7")]


BAD_INPUTS = [
    (b"[5.1,", JSON, "", 400),
    (b"{\"a\": 1}", JSON, "", 422),
    (b"[]", JSON, "", 422),
    (b"[NaN]", JSON, "", 400),
    (b"[1e999]", JSON, "", 422),
    (b"[\"x\"]", JSON, "", 422),
    (BODY, {"Content-Type": "text/plain"}, "", 415),
    (BODY, {}, "", 415),
    (b"[" + b"1," * 40_000 + b"1]", JSON, "", 413),
    (BODY, JSON, "?entity=999999", 404),
    (BODY, JSON, "?entity=a%20b", 422),
    (BODY, JSON, "?entity=1&entity=2", 422),  # one entity: no framework picks a repeat
    (b"[1" + b"0" * 400 + b"]", JSON, "", 422),
    (b"[" * 1500 + b"]" * 1500, JSON, "", 422),
]


@pytest.mark.parametrize(("body", "headers", "query", "status"), BAD_INPUTS)
def test_bad_input_gets_the_same_4xx_in_both_architectures(
    make_client, seeded_redis, model_stub, body, headers, query, status
):
    client = make_client("scoring", redis_url=seeded_redis.url, model_url=model_stub.url)
    got_status, got = client.post(body=body, headers=headers, query=query)
    assert got_status == status
    assert set(got) == {"error", "message", "status"} and got["status"] == status
    assert model_stub.bodies == []  # refused before any model call


def test_oversized_list_is_refused(make_client, seeded_redis, model_stub):
    client = make_client("scoring", redis_url=seeded_redis.url, model_url=model_stub.url,
                         max_values=8)
    status, body = client.post(body=json.dumps([1.0] * 9).encode())
    assert status == 422 and "at most 8" in body["message"]


def test_unknown_path_and_wrong_method_are_json(make_client):
    client = make_client("model", **FAST)
    status, body = client.get("/api/v1/nope")
    assert status == 404 and body["error"] == "not_found"
    status, body = client.get(f"/api/v1/ml/{client.arch}/predict")
    assert status == 405 and body["error"] == "method_not_allowed"


def test_same_answers_for_methods_and_paths_in_both_architectures(make_client):
    client = make_client("model", **FAST)
    predict = f"/api/v1/ml/{client.arch}/predict"
    raw = client._client
    assert raw.head("/api/v1/healthcheck").status_code == 200
    assert raw.options("/api/v1/healthcheck").status_code == 405
    assert raw.head(predict).status_code == 405
    for path in ("/api/v1/healthcheck/", predict + "/"):
        response = raw.get(path) if path.startswith("/api/v1/h") else raw.post(path)
        # 404, never a redirect whose Location comes from the client's Host header
        assert response.status_code == 404 and "location" not in response.headers


def test_a_model_redirect_is_not_followed(make_client, seeded_redis, model_stub):
    model_stub.reply = (307, b"")
    client = make_client("scoring", redis_url=seeded_redis.url, model_url=model_stub.url)
    status, body = client.post()
    # The answer itself is judged (test_faults.py: one with a Location is not followed).
    assert (status, body["error"]) == (502, "model_bad_response")


def test_model_down_is_502(make_client, seeded_redis):
    client = make_client("scoring", redis_url=seeded_redis.url,
                         model_url=f"http://127.0.0.1:{free_port()}")
    status, body = client.post()
    assert (status, body["error"]) == (502, "model_unavailable")


def test_slow_model_is_504_within_the_timeout(make_client, seeded_redis, model_stub):
    model_stub.delay_s = 3
    client = make_client("scoring", redis_url=seeded_redis.url, model_url=model_stub.url,
                         model_timeout_s=0.3)
    started = time.perf_counter()
    status, body = client.post()
    assert (status, body["error"]) == (504, "model_timeout")
    assert time.perf_counter() - started < 1.5


def test_model_answering_badly_is_502(make_client, seeded_redis, model_stub):
    model_stub.reply = (200, b'{"detail": "soon"}')
    client = make_client("scoring", redis_url=seeded_redis.url, model_url=model_stub.url)
    status, body = client.post()
    assert (status, body["error"]) == (502, "model_bad_response")


def test_redis_down_is_503(make_client, model_stub):
    client = make_client("scoring", redis_url=f"redis://127.0.0.1:{free_port()}/0",
                         model_url=model_stub.url, redis_timeout_s=0.5)
    status, body = client.post()
    assert (status, body["error"]) == (503, "feature_store_unavailable")


@pytest.mark.parametrize(
    "variant",
    [{"client_per_request": True}, {"blocking_redis": True}, {"sequential_model_calls": True},
     {"http_client": "aiohttp"}, {"http_client": "aiohttp", "client_per_request": True}],
)
def test_variants_answer_like_the_default_build(make_client, seeded_redis, model_stub, variant):
    model_stub.reply = (200, b'{"detail": 0.042}')
    client = make_client("scoring", redis_url=seeded_redis.url, model_url=model_stub.url, **variant)
    assert client.post() == (200, {"detail": 0.042})
    assert len(model_stub.bodies) == 2


def test_async_handler_calls_the_model_concurrently_unless_told_otherwise(seeded_redis, model_stub):
    model_stub.delay_s = 0.2
    timings = {}
    for sequential in (False, True):
        client, closer = open_client(
            "async", "scoring",
            Settings(redis_url=seeded_redis.url, model_url=model_stub.url,
                     sequential_model_calls=sequential),
        )
        started = time.perf_counter()
        assert client.post()[0] == 200
        timings[sequential] = time.perf_counter() - started
        closer.__exit__(None, None, None)
    assert timings[False] < 0.35 <= timings[True]


def test_model_calls_and_handler_cpu_are_settings_of_both_handlers(make_client, seeded_redis,
                                                                   model_stub):
    model_stub.reply = (200, b'{"detail": 0.03}')
    client = make_client("scoring", redis_url=seeded_redis.url, model_url=model_stub.url,
                         model_calls=5)
    assert client.post() == (200, {"detail": 0.03})
    assert len(model_stub.bodies) == 5
    status, index = client.get("/")
    assert status == 200 and "API 5 times" in index["description"]
    # the handler's own CPU work: a request costs at least that much CPU time of its thread
    # (thread CPU, not wall time: the assertion holds on a loaded machine)
    burn = make_client("scoring", redis_url=seeded_redis.url, model_url=model_stub.url,
                       handler_cpu_s=0.05, model_calls=1)
    started = time.process_time()
    assert burn.post()[0] == 200
    assert time.process_time() - started >= 0.05
