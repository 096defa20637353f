"""The verify step checks the BentoML model server when the topology has it (and only then):
its health check and a prediction on each architecture's path. Against a stand-in HTTP server
playing every service, so what is checked is verify's own logic."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from experiments.lab import topology, verify


class _StandIn(BaseHTTPRequestHandler):
    # Paths answered badly, by port: {port: status}.
    failing: dict[int, int] = {}

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer(200, {"status": "OK"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status = self.failing.get(self.server.server_port, 200)
        self._answer(status, {"detail": 0.045} if status == 200 else {"error": "service_busy"})

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[dict[str, ThreadingHTTPServer]]:
    started = {name: ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
               for name in ("lab", "bentoml")}
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in started.values()]
    for thread in threads:
        thread.start()
    yield started
    for server in started.values():
        server.shutdown()
        server.server_close()
    _StandIn.failing.clear()


def lab_topology(servers, with_bentoml: bool) -> topology.Topology:
    def entry(name: str) -> dict[str, object]:
        return {"host": "localhost", "cpus": [0],
                "url": f"http://127.0.0.1:{servers[name].server_port}"}

    services = {name: entry("lab") for name in topology.SERVICES}
    if with_bentoml:
        services[verify.BENTOML] = entry("bentoml")
    return topology.parse({"format_version": 1, "services": services,
                           "loadgen": [{"host": "localhost"}]})


def test_without_the_bentoml_server_verify_checks_what_it_did(servers):
    checks = verify.run_checks(lab_topology(servers, with_bentoml=False))
    assert all(check.ok for check in checks)
    assert not [check for check in checks if verify.BENTOML in check.what]


def test_a_deployed_bentoml_server_is_checked_on_both_paths(servers):
    checks = verify.run_checks(lab_topology(servers, with_bentoml=True))
    bentoml = [check for check in checks if verify.BENTOML in check.what]
    assert [c.url.split("/", 3)[3] for c in bentoml] == [
        "api/v1/healthcheck", "api/v1/ml/sync/predict", "api/v1/ml/async/predict"]
    assert all(check.ok for check in checks)


def test_a_bentoml_server_answering_badly_stops_the_run(servers):
    _StandIn.failing[servers["bentoml"].server_port] = 503
    with pytest.raises(verify.VerifyError, match="model-bentoml prediction"):
        verify.verify(lab_topology(servers, with_bentoml=True))
