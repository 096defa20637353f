"""Deploy the lab with the BentoML model server enabled (single-host inventory, ports and run dir
moved), with the scoring handlers pointed at it: it runs as a supervised program pinned to its
CPU set from its own venv, topology.json has it, verify's checks pass, both scoring handlers
answer through it; a deploy with it disabled again removes its program. Run under
``flock /tmp/labdeploy.lock`` when several people deploy on one machine."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from ansible_testutil import (
    cpus_allowed,
    descendants,
    get_json,
    kill_run_dir_processes,
    post_json,
    predict_path,
    require,
    run_playbook,
    snapshot_sources,
    wait_gone,
)

from experiments.lab import topology as lab_topology
from experiments.lab import verify
from services import bentoml_model

pytestmark = pytest.mark.slow


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
    path = Path(tempfile.mkdtemp(prefix="sl-bento-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_bentoml_model_server_deploys_pinned_serves_the_handlers_and_goes_away(workdir):
    require(shutil.which("taskset") is not None, "taskset (util-linux) is not installed")
    require(shutil.which("redis-server") is not None, "no redis-server")
    run_dir, state_dir = workdir / "run", workdir / "state"
    state_dir.mkdir()
    source = snapshot_sources(workdir / "src")
    names = ("redis", "model_sync", "model_async", "scoring_sync", "scoring_async", "bentoml")
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    bentoml_port = ports.pop("bentoml")
    bentoml_url = f"http://127.0.0.1:{bentoml_port}"
    extra = {"lab_run_dir": str(run_dir), "lab_ports": ports, "lab_source_dir": str(source),
             "feature_store_entities": 50, "model_bentoml_enabled": True,
             "model_bentoml_port": bentoml_port, "model_bentoml_device_slots": 1,
             "scoring_handler_model_urls": {"sync": bentoml_url, "async": bentoml_url}}
    deployed = False
    try:
        first = run_playbook("deploy.yml", workdir / "deploy.log", state_dir, extra_vars=extra,
                             timeout=900)
        deployed = True
        assert first.returncode == 0, first.explain()

        topology = lab_topology.load(state_dir / "topology.json")
        entry = topology.services[verify.BENTOML]
        assert entry["url"] == bentoml_url, entry
        # The arbiter and its workers, all on the CPU set, from the BentoML venv.
        pids = [entry["pids"], *descendants(entry["pids"])]
        assert len(pids) >= 2, pids
        assert {tuple(cpus_allowed(pid)) for pid in pids} == {tuple(entry["cpus"])}, pids
        argv = Path(f"/proc/{entry['pids']}/cmdline").read_bytes().split(b"\0")
        assert argv[0].decode() == str(run_dir / "app" / bentoml_model.VENV / "bin/python"), argv
        assert all(check.ok for check in verify.run_checks(topology)), verify.run_checks(topology)
        status, debug = get_json(f"{bentoml_url}/api/v1/debug/model")
        assert debug["batching"] == "bentoml" and debug["device_slots"] == 1, debug
        for arch in ("sync", "async"):
            status, answer = post_json(topology.scoring_url(arch) + predict_path(f"x-{arch}"))
            assert status == 200 and 0 < answer["detail"] < 60, answer

        # Disabled again (a settings-only deploy): the program goes, the rest of the lab stays.
        extra["model_bentoml_enabled"] = False
        extra.pop("scoring_handler_model_urls")
        off = run_playbook("deploy.yml", workdir / "deploy-off.log", state_dir,
                           extra_vars=extra, args=("--tags", "configure"), timeout=900)
        assert off.returncode == 0, off.explain()
        assert not (run_dir / "supervisor/conf.d/model-bentoml.conf").exists()
        assert verify.BENTOML not in json.loads((state_dir / "topology.json").read_text())[
            "services"]
        with pytest.raises(OSError):
            get_json(f"{bentoml_url}/api/v1/healthcheck", timeout=2)

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
