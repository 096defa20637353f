"""The Redis protocol code each stack's store runs, against a real Redis: redis-py's own Python
unless SCORING_LAB_REDIS_PARSER=hiredis, although hiredis is installed and redis-py would pick
it by itself (services/redis_protocol.py)."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
import redis.utils
from redis._parsers import _AsyncHiredisParser, _AsyncRESP3Parser, _HiredisParser, _RESP3Parser
from redis.connection import AbstractConnection, HiredisRespSerializer, PythonRespSerializer

from services import redis_protocol
from services.async_app.clients import FeatureStore as AsyncStore
from services.features import FEATURE_DIM
from services.settings import Settings
from services.sync_app.clients import FeatureStore as SyncStore
from tests.conftest import free_port, start_service, stop


def test_hiredis_is_installed_so_the_default_is_a_choice():
    assert redis.utils.HIREDIS_AVAILABLE


@pytest.mark.parametrize("per_request", [False, True])
@pytest.mark.parametrize("parser,parser_class,packer", [
    ("python", _RESP3Parser, PythonRespSerializer),
    ("hiredis", _HiredisParser, HiredisRespSerializer),
])
def test_the_blocking_store_speaks_the_chosen_protocol_code(seeded_redis, monkeypatch, parser,
                                                            parser_class, packer, per_request):
    used = []  # every connection the store makes (one, for one command)
    init = AbstractConnection.__init__
    monkeypatch.setattr(AbstractConnection, "__init__",
                        lambda self, *a, **k: (used.append(self), init(self, *a, **k))[1])
    store = SyncStore(Settings(redis_url=seeded_redis.url, redis_parser=parser,
                               client_per_request=per_request))
    try:
        assert len(store.get("1")) == FEATURE_DIM
    finally:
        store.close()
    assert [(type(c._parser), type(c._command_packer)) for c in used] == [(parser_class, packer)]


@pytest.mark.parametrize("url,transport", [("redis://127.0.0.1:6379/0", redis.Connection),
                                           ("rediss://127.0.0.1:6380/0", redis.SSLConnection)])
def test_the_python_packer_keeps_the_transport_of_the_url(url, transport):
    options = redis_protocol.blocking_options(Settings(redis_url=url))
    pool = redis.BlockingConnectionPool.from_url(url, **options)
    assert issubclass(pool.connection_class, transport)
    assert isinstance(pool.make_connection()._command_packer, PythonRespSerializer)


@pytest.mark.parametrize("per_request", [False, True])
@pytest.mark.parametrize("parser,parser_class", [
    ("python", _AsyncRESP3Parser),
    ("hiredis", _AsyncHiredisParser),
])
def test_the_async_store_reads_with_the_chosen_parser(seeded_redis, parser, parser_class,
                                                       per_request):
    async def read():
        store = AsyncStore(Settings(redis_url=seeded_redis.url, redis_parser=parser,
                                    client_per_request=per_request))
        try:
            values = await store.get("1")
            return values, store._client and store._client.connection_pool
        finally:
            await store.aclose()

    values, pool = asyncio.run(read())
    assert len(values) == FEATURE_DIM
    if pool is not None:
        (connection,) = pool._available_connections
        assert type(connection._parser) is parser_class


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["sync", "async"])
def test_a_hiredis_build_deploys_and_serves_through_the_real_servers(arch, seeded_redis,
                                                                      tmp_path):
    model_port, scoring_port = free_port(), free_port()
    started = [start_service("model", arch, model_port, {"SCORING_LAB_WORKERS": "1"},
                             tmp_path / "model.log")]
    try:
        started.append(start_service(
            "scoring", arch, scoring_port,
            {"SCORING_LAB_WORKERS": "1", "SCORING_LAB_REDIS_URL": seeded_redis.url,
             "SCORING_LAB_MODEL_URL": f"http://127.0.0.1:{model_port}",
             "SCORING_LAB_REDIS_PARSER": "hiredis",
             **({"SCORING_LAB_HTTP_CLIENT": "aiohttp"} if arch == "async" else {})},
            tmp_path / "scoring.log"))
        request = urllib.request.Request(
            f"http://127.0.0.1:{scoring_port}/api/v1/ml/{arch}/predict?entity=1",
            data=b"[5.1,3.5,1.4,0.2]", method="POST",
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert isinstance(json.loads(response.read())["detail"], float)
    finally:
        for process in started:
            stop(process)
