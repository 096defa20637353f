"""run_locust against a tiny local server, and the CPU guard on a busy process."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import time

import psutil
import pytest

from experiments.load.remote import HostRun, RemoteError, WorkerHost, master_bind_address
from experiments.load.run import CpuGuard, kill_group, load_result, run_locust
from experiments.load.worker_host import Job
from experiments.protocol import GuardParams, Scenario
from tests.experiments.fake_endpoint import score_server


@pytest.fixture
def server():
    with score_server(hold_s=0.01) as url:
        yield url


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
        kill_group(busy)
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
        kill_group(idle)
        assert idle.poll() is not None  # killed by its pid's group
    assert guard.violation is None


@pytest.mark.slow
def test_run_locust_distributed_over_worker_hosts(server, tmp_path):
    """The distributed shape with two load-generator 'hosts' that are this machine: a master
    here, each host's workers started by worker_host, their files sent back as a tar stream,
    request logs merged into the run directory, each host's guard in the result."""
    hosts = [WorkerHost(host=name, cpus=[0], local=True, run_dir=str(tmp_path / f"run-{name}"))
             for name in ("lg-a", "lg-b")]
    scenario = Scenario(name="dist", kind="constant", users=6, spawn_rate=6.0, duration_s=6.0)
    out = tmp_path / "locust"
    result = run_locust(scenario, server, "/api/v1/ml/async/predict", out, arch="async",
                        worker_hosts=hosts, timeout_margin_s=40, seed=2)
    assert result.exit_code == 0, (out / "locust.log").read_text()[-2000:]
    assert result.workers == 2 and "--master" in result.command
    assert [h["host"] for h in result.hosts] == ["lg-a", "lg-b"]
    for record in result.hosts:
        assert "failed" not in record, record
        assert record["stopped_by"] == "master" and record["exit_codes"] == [0]
        assert record["guard"]["violation"] is None
        host_dir = out / "hosts" / record["host"]
        assert (host_dir / "guard.json").exists() and (host_dir / "locust_worker1.log").exists()
        assert not (host_dir / "transfer.tar").exists()
    # Both hosts ran users: their request logs sit beside each other, named by host.
    names = sorted(p.name for p in result.request_csvs)
    assert [n.split("_")[1] for n in names] == ["lg-a", "lg-b"], names
    assert all(p.parent == out for p in result.request_csvs)
    rows = [r for p in result.request_csvs for r in csv.DictReader(p.open())]
    assert 20 <= len(rows) <= 50 and all(r["ok"] == "1" for r in rows)
    # The master's aggregate counts the same requests as the per-host logs.
    with result.stats_csv.open() as f:
        total = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    assert int(total["Request Count"]) == len(rows)
    # The hosts' job directories stay where they ran, one per run, never reused.
    for h in hosts:
        assert len(list((tmp_path / f"run-{h.host}" / "locust").iterdir())) == 1
    assert load_result(out)["hosts"][0]["host"] == "lg-a"


def test_worker_host_ssh_command_follows_the_inventory():
    host = WorkerHost.from_topology({
        "host": "lg", "cpus": [2, 3], "run_dir": "/var/tmp/lab", "app_dir": "/var/tmp/lab/app",
        "python": "/var/tmp/lab/app/.venv/bin/python", "ansible_host": "198.18.7.10",
        "ansible_user": "bench", "ansible_port": 2222,
        "ansible_ssh_private_key_file": "/keys/id_ed25519",
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o 'UserKnownHostsFile=/dev/null'",
    }, local=False)
    assert host.workers == 2
    cmd = host.job_command()
    assert cmd[0] == "ssh" and "BatchMode=yes" in cmd
    assert cmd[cmd.index("-p") + 1] == "2222" and cmd[cmd.index("-l") + 1] == "bench"
    assert cmd[cmd.index("-i") + 1] == "/keys/id_ed25519"
    assert "UserKnownHostsFile=/dev/null" in cmd
    assert cmd[-2] == "198.18.7.10"
    assert cmd[-1] == ("cd /var/tmp/lab/app && exec /var/tmp/lab/app/.venv/bin/python "
                       "-m experiments.load.worker_host")
    assert host.job_dir("j1") == "/var/tmp/lab/locust/j1"


def test_worker_host_without_deployed_app_is_a_clear_error():
    host = WorkerHost.from_topology({"host": "old", "cpus": [0], "ansible_host": "h"},
                                    local=False)
    with pytest.raises(RemoteError, match="'old'.*redeploy"):
        host.job_command()


def test_master_binds_loopback_when_every_load_generator_is_local():
    hosts = [WorkerHost(host="a", cpus=[0], local=True), WorkerHost(host="b", cpus=[1],
                                                                      local=True)]
    assert master_bind_address(hosts) == ("127.0.0.1", {"a": "127.0.0.1", "b": "127.0.0.1"})


@pytest.mark.slow
def test_closing_the_connection_stops_a_hosts_workers(tmp_path):
    """A host whose controller goes away (Ctrl-C, a dropped SSH connection) stops its
    workers at once, long before its deadline, and still sends back what it has."""
    host = WorkerHost(host="lg", cpus=[0], local=True, run_dir=str(tmp_path / "run"))
    job = Job(host="lg", out_dir=host.job_dir("interrupted"), master_host="127.0.0.1",
              master_port=_closed_port(), workers=1, cpus=[0], taskset="", scenario={
                  "stages": [], "pacing_s": 1.0, "path": "/", "arrival": "spread",
                  "payload": [1.0], "seed": None},
              guard={"interval_s": 0.5, "threshold": 0.8, "sustain_s": 3.0, "grace_s": 3.0},
              deadline_s=300, env={"SCORING_LAB_SERVICE": "loadgen"})
    out = tmp_path / "out"
    run = HostRun(host, job, out)
    time.sleep(3)  # the worker is up, waiting for a master that never answers
    worker_pids = [p.pid for p in psutil.Process(run.proc.pid).children(recursive=True)]
    assert worker_pids, (run.dir / "worker_host.log").read_text()
    started = time.monotonic()
    run.close()
    assert time.monotonic() - started < 15
    assert run.proc.returncode == 0, (run.dir / "worker_host.log").read_text()
    assert not [pid for pid in worker_pids if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    record = run.unpack(out)
    assert record["stopped_by"] == "controller" and record["host"] == "lg"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
