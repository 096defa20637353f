"""Deploy the lab with every HTTP service on granian (SCORING_LAB_SERVER=granian through the
roles' ``*_env`` variables; single-host inventory, ports and run dir moved): the deploy path
needs no change, so this checks that what runs is granian (each service's master has the
variable, its answers carry granian's Server header), pinned to its CPU set with its workers,
that verify's checks pass, and that teardown (supervisord's SIGTERM to each program's group)
leaves no process. Run under ``flock /tmp/labdeploy.lock`` when several people deploy."""

from __future__ import annotations

import shutil
import socket
import tempfile
import urllib.request
from pathlib import Path

import pytest
from ansible_testutil import (
    HTTP_SERVICES,
    PROBE_BODY,
    cpus_allowed,
    descendants,
    environ,
    kill_run_dir_processes,
    predict_path,
    require,
    run_playbook,
    snapshot_sources,
    wait_gone,
)

from experiments.lab import topology as lab_topology
from experiments.lab import verify

pytestmark = pytest.mark.slow
GRANIAN = {"SCORING_LAB_SERVER": "granian"}


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture
def workdir():
    # Short paths: the supervisord socket lives under the run dir (unix sockets: < 108 bytes).
    path = Path(tempfile.mkdtemp(prefix="sl-granian-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _server_header(url: str) -> tuple[int, str | None]:
    request = urllib.request.Request(url, data=PROBE_BODY, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers.get("Server")


def test_every_http_service_deploys_and_serves_on_granian(workdir):
    require(shutil.which("taskset") is not None, "taskset (util-linux) is not installed")
    require(shutil.which("redis-server") is not None, "no redis-server")
    run_dir, state_dir = workdir / "run", workdir / "state"
    state_dir.mkdir()
    source = snapshot_sources(workdir / "src")
    names = ("redis", "model_sync", "model_async", "scoring_sync", "scoring_async")
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    extra = {"lab_run_dir": str(run_dir), "lab_ports": ports, "lab_source_dir": str(source),
             "feature_store_entities": 50, "model_api_env": GRANIAN,
             "scoring_handler_env": GRANIAN}
    deployed = False
    try:
        first = run_playbook("deploy.yml", workdir / "deploy.log", state_dir, extra_vars=extra,
                             timeout=900)
        deployed = True
        assert first.returncode == 0, first.explain()

        topology = lab_topology.load(state_dir / "topology.json")
        for name in HTTP_SERVICES:
            entry = topology.services[name]
            master = entry["pids"]
            assert environ(master).get("SCORING_LAB_SERVER") == "granian", name
            family = [master, *descendants(master)]
            assert len(family) >= 3, (name, family)  # the master and its (>= 2) workers
            assert {tuple(cpus_allowed(pid)) for pid in family} == {tuple(entry["cpus"])}, name
            status, server = _server_header(entry["url"] + predict_path(name))
            assert (status, server) == (200, "granian"), name
        assert all(check.ok for check in verify.run_checks(topology)), verify.run_checks(topology)

        down = run_playbook("teardown.yml", workdir / "teardown.log", state_dir,
                            extra_vars=extra)
        assert down.returncode == 0, down.explain()
        deployed = False
        assert wait_gone(run_dir) == []
    finally:
        if deployed:
            run_playbook("teardown.yml", workdir / "teardown-finalizer.log", state_dir,
                         extra_vars=extra)
        kill_run_dir_processes(run_dir)
