"""run_locust against a tiny local server, and the CPU guard on a busy process."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest

from experiments.load.run import CpuGuard, _kill_group, load_result, run_locust
from experiments.protocol import GuardParams, Scenario


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ok = (
            json.loads(body) == [5.1, 3.5, 1.4, 0.2]
            and self.headers.get("Content-Type") == "application/json"
        )
        time.sleep(0.01)
        out = json.dumps({"detail": 0.05} if ok else {"detail": "bad request"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow
def test_run_locust_smoke(server, tmp_path):
    scenario = Scenario(name="smoke", kind="constant", users=5, spawn_rate=5.0, duration_s=6.0)
    ticks = []
    result = run_locust(
        scenario,
        server,
        "/api/v1/ml/sync/predict",
        tmp_path,
        arch="sync",
        timeout_margin_s=40,
        seed=1,
        progress=lambda e, p: ticks.append(e),
    )
    assert result.exit_code == 0, (tmp_path / "locust.log").read_text()[-2000:]
    assert not result.timed_out
    for p in (
        result.stats_csv,
        result.history_csv,
        result.failures_csv,
        result.exceptions_csv,
        result.html,
    ):
        assert p is not None and p.exists()
    assert len(result.request_csvs) == 1
    with result.request_csvs[0].open() as f:
        rows = list(csv.DictReader(f))
    # 5 users x ~6 s at 1 request/s each, every answer a number
    assert 15 <= len(rows) <= 40 and len(rows) == result.n_requests
    assert all(r["ok"] == "1" and r["status"] == "200" for r in rows)
    assert all(float(r["response_time_ms"]) >= 10 for r in rows)
    # exact timings: sub-millisecond digits are kept
    assert any(not r["response_time_ms"].endswith(".000") for r in rows)
    # the guard sampled about once a second for the whole run
    assert len(result.guard_samples) >= 5 and ticks
    assert all("total_percent" in s for s in result.guard_samples)
    d = load_result(tmp_path)
    assert d["guard"]["n_samples"] == len(result.guard_samples)
    assert d["files"]["requests"][0].endswith(result.request_csvs[0].name)
    guard_doc = json.loads((tmp_path / "guard.json").read_text())
    assert len(guard_doc["samples"]) == len(result.guard_samples)
    # only CPU saturation may invalidate a healthy run on a busy machine
    assert all("CPU" in r for r in result.reasons), result.reasons


def test_guard_flags_a_saturated_load_generator():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
    try:
        guard = CpuGuard(
            [psutil.Process(busy.pid)],
            cores=2,
            # A low threshold: the busy loop shares 2 cores with whatever else runs (CI, other
            # tests), and only has to show it is busy, not that it owns a core.
            params=GuardParams(interval_s=0.25, threshold=0.2, sustain_s=0.75, grace_s=0.0),
        )
        for _ in range(12):
            time.sleep(0.25)
            guard.sample()
    finally:
        _kill_group(busy)
    # the first sample is measured from process creation, never 0
    assert guard.samples[0]["total_percent"] > 0
    assert guard.violation and "saturated" in guard.violation


def test_guard_stays_quiet_on_an_idle_process():
    idle = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True
    )
    try:
        time.sleep(0.3)  # let start-up finish
        guard = CpuGuard(
            [psutil.Process(idle.pid)],
            cores=1,
            params=GuardParams(interval_s=0.2, threshold=0.8, sustain_s=0.4, grace_s=0.0),
        )
        guard._prev[idle.pid] = (sum(psutil.Process(idle.pid).cpu_times()[:2]), time.time())
        for _ in range(4):
            time.sleep(0.2)
            guard.sample()
    finally:
        _kill_group(idle)
        assert idle.poll() is not None  # killed by its pid's group
    assert guard.violation is None
