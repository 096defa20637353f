"""The real servers, as the deployment runs them: gunicorn with the meinheld worker for the
sync stack, uvicorn for the async one, each a process tree started by ``python -m services``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest

from tests.conftest import ROOT, free_port, start_service, stop

pytestmark = pytest.mark.slow

BODY = b"[5.1,3.5,1.4,0.2]"


def post(url: str, body: bytes = BODY, content_type: str = "application/json"):
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module", params=["sync", "async"])
def stack(request, seeded_redis, tmp_path_factory):
    """Model API + scoring handler of one architecture, plus a scoring handler whose model is
    down and one whose Redis is down, for the fault answers."""
    arch = request.param
    logs = tmp_path_factory.mktemp(f"logs-{arch}")
    ports = {name: free_port() for name in ("model", "scoring", "no_model", "no_redis")}
    redis_url = seeded_redis.url
    common = {"SCORING_LAB_WORKERS": "2"}
    started = []
    try:
        started.append(start_service("model", arch, ports["model"], common, logs / "model.log"))
        model_url = f"http://127.0.0.1:{ports['model']}"
        for name, env in {
            "scoring": {"SCORING_LAB_REDIS_URL": redis_url, "SCORING_LAB_MODEL_URL": model_url},
            "no_model": {"SCORING_LAB_REDIS_URL": redis_url,
                         "SCORING_LAB_MODEL_URL": f"http://127.0.0.1:{free_port()}"},
            "no_redis": {"SCORING_LAB_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                         "SCORING_LAB_MODEL_URL": model_url, "SCORING_LAB_REDIS_TIMEOUT_S": "0.5"},
        }.items():
            started.append(start_service("scoring", arch, ports[name], {**common, **env},
                                         logs / f"{name}.log"))
        yield arch, ports, started
    finally:
        for process in started:
            stop(process)


def url(ports, name, arch, query=""):
    return f"http://127.0.0.1:{ports[name]}/api/v1/ml/{arch}/predict{query}"


def test_scoring_request_end_to_end(stack):
    arch, ports, _ = stack
    status, body = post(url(ports, "scoring", arch))
    assert status == 200
    # The mean of two 40-50 ms sleeps, as the model API reports them.
    assert 0.040 <= body["detail"] <= 0.050
    status, body = post(url(ports, "model", arch))
    assert status == 200 and 0.040 <= body["detail"] <= 0.050


def test_one_request_at_a_time_sync_waits_for_two_sleeps_async_for_one(stack):
    arch, ports, _ = stack
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        assert post(url(ports, "scoring", arch))[0] == 200
        timings.append(time.perf_counter() - started)
    median = sorted(timings)[2]
    if arch == "sync":
        assert median >= 0.080  # two sequential 40-50 ms calls
    else:
        assert 0.040 <= median < 0.080  # both calls at once: one sleep


def test_bad_input_and_faults_over_real_http(stack):
    arch, ports, _ = stack
    assert post(url(ports, "scoring", arch), b"[1,")[0] == 400
    assert post(url(ports, "scoring", arch), b"[]")[0] == 422
    assert post(url(ports, "scoring", arch), content_type="text/plain")[0] == 415
    assert post(url(ports, "scoring", arch, "?entity=404404"))[0] == 404
    status, body = post(url(ports, "no_model", arch))
    assert (status, body["error"]) == (502, "model_unavailable")
    status, body = post(url(ports, "no_redis", arch))
    assert (status, body["error"]) == (503, "feature_store_unavailable")


def test_workers_are_separate_processes_and_stop_with_the_master(stack):
    _, _, started = stack
    master = psutil.Process(started[0].pid)
    assert len(master.children(recursive=True)) >= 2


def test_a_bad_setting_is_a_clear_error_not_a_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "services", "serve", "--role", "model", "--arch", "sync"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={"PATH": "/usr/bin:/bin", "SCORING_LAB_SLEEP_MIN_S": "-1"},
    )
    assert result.returncode == 2
    assert "SCORING_LAB_SLEEP_MIN_S" in result.stderr and "Traceback" not in result.stderr
