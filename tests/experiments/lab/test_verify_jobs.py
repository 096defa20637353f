"""verify's job check (experiments/lab/verify.py): where the topology has the job queue's
workers, a job is submitted through each scoring handler and polled until done with a
prediction; a job that fails, or never leaves pending within the timeout, fails the check. A
stand-in scoring handler on 127.0.0.1 answers as the real one does (services/jobs.py)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from experiments.lab import verify

JOB_ID = "0123456789abcdef0123456789abcdef"


class JobsStub:
    """POST .../jobs -> 202; GET .../jobs/<id> -> pending ``pending_polls`` times, then
    ``final``."""

    def __init__(self, final: dict, pending_polls: int = 2) -> None:
        self.polls = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers["Content-Length"]))
                arch = self.path.split("/")[4]
                self._send(202, {"id": JOB_ID, "status": "pending"},
                           {"Location": f"/api/v1/ml/{arch}/jobs/{JOB_ID}"})

            def do_GET(self):  # noqa: N802
                stub.polls += 1
                if stub.polls <= pending_polls:
                    self._send(200, {"id": JOB_ID, "status": "pending"})
                else:
                    self._send(200, {"id": JOB_ID, **final})

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
def stub(request):
    made = JobsStub(**request.param)
    yield made
    made.close()


DONE = {"status": "done", "result": {"detail": 0.045}}


@pytest.mark.parametrize(("stub", "ok"), [
    ({"final": DONE}, True),
    ({"final": {"status": "failed", "error": {"error": "model_unavailable", "status": 502,
                                               "message": "down"}}}, False),
    ({"final": {"status": "done", "result": {"detail": "soon"}}}, False),
    ({"final": DONE, "pending_polls": 10_000}, False),  # still pending at the timeout
], indirect=["stub"])
def test_a_job_is_submitted_and_polled_to_done(stub, ok):
    check = verify._job_check(stub.url, "sync", timeout=1.0)
    assert check.ok is ok, check
    assert stub.polls >= 1
    assert check.url.endswith(f"/api/v1/ml/sync/jobs/{JOB_ID}")
