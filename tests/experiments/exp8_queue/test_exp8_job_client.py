"""The job clients end to end through run_locust and the lab's locustfile, against a tiny job
server on 127.0.0.1: every arrival submits, polls its Location at the stated interval until the
job is done, and one row per job says how it ended (rejected, done, failed, lost)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from experiments.analysis.jobs import read_jobs
from experiments.load.arrivals import OpenModel
from experiments.load.job_log import JobSpec
from experiments.load.run import run_locust
from experiments.protocol import Scenario
from services import jobs
from services.settings import Arch
from tests.experiments.fake_endpoint import PAYLOAD

JOBS = jobs.jobs_path(Arch.SYNC)
WORK_S = 0.2  # a job is done this long after its submit
POLL_S = 0.05


@contextmanager
def job_server() -> Iterator[tuple[str, dict]]:
    """Submit: every 5th is refused 503 queue_full, every 7th accepted job fails, every 11th
    is forgotten (its poll answers 404); the rest are done WORK_S after their submit."""
    state: dict = {"submits": 0, "accepted": {}, "polls": 0, "lock": threading.Lock()}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
            out = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(out)

        def do_POST(self):  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            assert self.path == JOBS and body == PAYLOAD
            with state["lock"]:
                state["submits"] += 1
                n = state["submits"]
                if n % 5 == 0:
                    return self._send(503, {"error": "queue_full", "message": "full",
                                            "status": 503}, {"Retry-After": "1"})
                job_id = jobs.new_job_id()
                state["accepted"][job_id] = (time.time(), len(state["accepted"]) + 1)
            self._send(202, jobs.pending(job_id), {"Location": jobs.job_path(Arch.SYNC, job_id)})

        def do_GET(self):  # noqa: N802
            found = re.fullmatch(rf"{JOBS}/([0-9a-f]{{32}})", self.path)
            with state["lock"]:
                state["polls"] += 1
                entry = state["accepted"].get(found.group(1)) if found else None
            if entry is None or entry[1] % 11 == 0:
                return self._send(404, {"error": "job_not_found", "message": "?",
                                        "status": 404})
            submitted, k = entry
            job_id = found.group(1)
            if time.time() - submitted < WORK_S:
                return self._send(200, jobs.pending(job_id))
            if k % 7 == 0:
                return self._send(200, jobs.finished(job_id, {"error": {
                    "error": "model_unavailable", "message": "down", "status": 502}}))
            self._send(200, jobs.finished(job_id, {"result": {"detail": 0.05}}))

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.slow
def test_every_arrival_is_a_job_submitted_polled_and_recorded(tmp_path):
    model = OpenModel(rate=20.0, seed=3, drain_s=1.0, nominal_count=True)
    spec = JobSpec(poll_interval_s=POLL_S, deadline_s=3.0)
    with job_server() as (url, state):
        result = run_locust(Scenario(name="jobs", kind="open", rate=20.0, duration_s=2.0),
                            url, JOBS, tmp_path, arrival="open", arch="sync",
                            payload=PAYLOAD, open_model=model, job=spec.to_dict(),
                            timeout_margin_s=30)
    assert result.exit_code in (0, 1), (tmp_path / "locust.log").read_text()[-2000:]
    assert json.loads((tmp_path / "scenario.json").read_text())["job"] == spec.to_dict()
    records = read_jobs(sorted(tmp_path.glob("jobs_*.csv")))
    assert len(records) == 40 == state["submits"]  # 20/s for 2 s, exactly (nominal count)
    outcomes = {o: sum(1 for r in records if r.outcome == o) for o in {r.outcome
                                                                        for r in records}}
    accepted = len(state["accepted"])
    assert outcomes["rejected"] == 40 - accepted == 8
    lost = accepted // 11
    failed = sum(1 for k in range(1, accepted + 1) if k % 7 == 0 and k % 11)
    assert outcomes.get("lost", 0) == lost and outcomes.get("failed", 0) == failed
    assert outcomes["done"] == accepted - lost - failed
    done = [r for r in records if r.done]
    # done only once WORK_S had passed, seen within a poll interval (and a slack) after it
    assert all(WORK_S * 1000 <= r.ttr_ms <= WORK_S * 1000 + POLL_S * 1000 + 300 for r in done)
    assert all(r.polls >= WORK_S / POLL_S - 1 for r in done)
    assert all(r.submit_status == 503 and r.error == "queue_full" and r.polls == 0
               for r in records if r.outcome == "rejected")
    # every submit and poll is also a request of Locust's own log
    assert result.n_requests == state["submits"] + state["polls"]
