"""Deploy the whole lab to this machine with the default (single-host) inventory.

Ports, run dir and controller state dir are moved so the test does not collide with a
developer's running lab. Checks: health checks and one scoring request per architecture, every
process's CPU affinity equals its CPU set, topology.json, Redis bound to the lab address only,
a second deploy and a --check --diff run report no change, teardown leaves no process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from ansible_testutil import (
    HTTP_SERVICES,
    cpus_allowed,
    descendants,
    environ,
    get_json,
    kill_run_dir_processes,
    load_cpu_filters,
    post_json,
    predict_path,
    require,
    run_playbook,
    snapshot_sources,
    wait_gone,
)

pytestmark = pytest.mark.slow


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture
def workdir():
    # Short paths: the supervisord socket lives under the run dir (unix sockets: < 108 bytes).
    path = Path(tempfile.mkdtemp(prefix="sl-single-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_single_host_deploy_pins_serves_is_idempotent_and_tears_down(workdir: Path) -> None:
    require(shutil.which("taskset") is not None, "taskset (util-linux) is not installed")
    require(
        shutil.which("redis-server") is not None or shutil.which("apt-get") is not None,
        "no redis-server and no apt-get to install it",
    )
    run_dir, state_dir = workdir / "run", workdir / "state"
    state_dir.mkdir()
    source = snapshot_sources(workdir / "src")
    redis, model_sync, model_async, scoring_sync, scoring_async = _free_ports(5)
    ports = {
        "redis": redis,
        "model_sync": model_sync,
        "model_async": model_async,
        "scoring_sync": scoring_sync,
        "scoring_async": scoring_async,
    }
    extra = {"lab_run_dir": str(run_dir), "lab_ports": ports, "lab_source_dir": str(source)}

    def playbook(name: str, log: str, *args: str):
        return run_playbook(name, workdir / log, state_dir, extra_vars=extra, args=args)

    deployed = False
    try:
        first = playbook("deploy.yml", "deploy-1.log")
        deployed = True
        assert first.returncode == 0, first.explain()

        topology = json.loads((state_dir / "topology.json").read_text())
        services = topology["services"]
        assert topology["format_version"] == 1
        assert set(services) == {"redis", *HTTP_SERVICES}
        assert topology["inventory"] and topology["inventory"][0].endswith("single-host")

        # --- the CPU sets are the documented single-host layout of this machine -------------
        layout = load_cpu_filters().lab_cpu_layout(len(os.sched_getaffinity(0)))
        cpu_list = load_cpu_filters().lab_cpu_list
        expected_cpus = {
            "redis": layout["data"],
            "model-sync": layout["data"],
            "model-async": layout["data"],
            "scoring-sync": layout["scoring"],
            "scoring-async": layout["scoring"],
        }
        expected_ports = {
            "redis": redis,
            "model-sync": model_sync,
            "model-async": model_async,
            "scoring-sync": scoring_sync,
            "scoring-async": scoring_async,
        }
        for name, entry in services.items():
            assert entry["host"] == "localhost"
            assert entry["address"] == "127.0.0.1"
            assert entry["port"] == expected_ports[name]
            assert entry["cpus"] == cpu_list(expected_cpus[name]), name
            assert entry["affinity"] == entry["cpus"], name
            assert entry["run_dir"] == str(run_dir)
            assert entry["workers"] is None
            scheme = "redis" if name == "redis" else "http"
            suffix = "/0" if name == "redis" else ""
            assert entry["url"] == f"{scheme}://127.0.0.1:{entry['port']}{suffix}"
        assert [lg["cpus"] for lg in topology["loadgen"]] == [cpu_list(layout["loadgen"])]
        assert topology["loadgen"][0]["python"] == str(run_dir / "app/.venv/bin/python")
        assert topology["monitor"][0]["samples"] == str(run_dir / "monitor/samples.jsonl")
        assert topology["monitor"][0]["affinity"] == cpu_list(layout["loadgen"])

        # --- every process of every program (workers too) is pinned and labelled ------------
        labelled = {**services, "monitor": topology["monitor"][0]}
        for name, entry in labelled.items():
            pid = entry["pids"]
            family = [pid, *descendants(pid)]
            for member in family:
                assert cpus_allowed(member) == entry["cpus"], (name, member)
            env = environ(pid)
            assert env.get("SCORING_LAB_SERVICE") == name
            assert env.get("SCORING_LAB_RUN_DIR") == str(run_dir)
            if name in HTTP_SERVICES:
                assert len(family) >= 2, f"{name} has no worker processes: {family}"

        # --- health checks and one scoring request per architecture -------------------------
        for name in HTTP_SERVICES:
            status, body = get_json(services[name]["url"] + "/api/v1/healthcheck")
            assert (status, body) == (200, {"status": "OK"}), name
        for name in ("scoring-sync", "scoring-async"):
            status, body = post_json(services[name]["url"] + predict_path(name))
            assert status == 200 and isinstance(body["detail"], float), (name, body)

        # --- Redis listens on the lab address only (127.0.0.2 is loopback too) --------------
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.2", redis), timeout=2).close()

        # --- the monitor writes samples -----------------------------------------------------
        samples = Path(topology["monitor"][0]["samples"])
        assert samples.exists()

        # --- idempotence: a second deploy and a check run change nothing --------------------
        second = playbook("deploy.yml", "deploy-2.log")
        assert second.returncode == 0, second.explain()
        assert second.recap()["localhost"]["changed"] == 0, second.explain()
        assert json.loads((state_dir / "topology.json").read_text()) == topology

        check = playbook("deploy.yml", "deploy-check.log", "--check", "--diff")
        assert check.returncode == 0, check.explain()
        assert check.recap()["localhost"]["changed"] == 0, check.explain()

        # --- teardown leaves nothing running ------------------------------------------------
        down = playbook("teardown.yml", "teardown.log")
        assert down.returncode == 0, down.explain()
        deployed = False
        assert wait_gone(run_dir) == []
        assert not (state_dir / "topology.json").exists()
        again = playbook("teardown.yml", "teardown-2.log")
        assert again.returncode == 0, again.explain()
        assert again.recap()["localhost"]["changed"] == 0, again.explain()
    finally:
        if deployed:
            playbook("teardown.yml", "teardown-finalizer.log")
        kill_run_dir_processes(run_dir)
