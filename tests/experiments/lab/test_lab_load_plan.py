"""Where Locust runs, decided from the deployed topology's loadgen group."""

from __future__ import annotations

from experiments.lab.session import LoadPlan
from experiments.lab.topology import SERVICES, parse


def _topology(*loadgens: dict) -> object:
    services = {name: {"host": "h", "url": "http://h", "cpus": [0]} for name in SERVICES}
    return parse({"format_version": 1, "services": services, "loadgen": list(loadgens)})


LOCAL = {"host": "localhost", "cpus": [1], "run_dir": "/var/tmp/lab",
         "ansible_connection": "local"}


def _remote(name: str, cpus: list[int]) -> dict:
    return {"host": name, "cpus": cpus, "run_dir": f"/srv/{name}", "app_dir": f"/srv/{name}/app",
            "python": f"/srv/{name}/app/.venv/bin/python", "ansible_host": f"{name}.example",
            "ansible_connection": "ssh"}


def test_the_controller_alone_runs_locust_itself():
    plan = LoadPlan.from_topology(_topology(LOCAL))
    assert not plan.distributed and plan.worker_hosts == []
    assert plan.local_cpus == [1] and plan.local_workers == 0
    assert plan.describe() == {"mode": "local", "host": "localhost", "cpus": [1],
                               "locust_workers": 0}
    two_cores = LoadPlan.from_topology(_topology({**LOCAL, "cpus": [2, 3]}))
    assert two_cores.local_workers == 2  # a master and one worker per core


def test_a_remote_load_generator_runs_workers_there():
    plan = LoadPlan.from_topology(_topology(_remote("lg1", [0, 1])))
    assert plan.distributed and plan.local_cpus == [] and plan.local_workers == 0
    (host,) = plan.worker_hosts
    assert (host.host, host.workers, host.local) == ("lg1", 2, False)
    assert plan.describe()["locust_workers"] == 2


def test_several_load_generators_share_the_load_and_the_controller_keeps_the_master():
    plan = LoadPlan.from_topology(_topology(LOCAL, _remote("lg1", [0]), _remote("lg2", [3])))
    assert plan.distributed and plan.local_cpus == [1]  # the master, pinned here
    assert [(h.host, h.local) for h in plan.worker_hosts] == [
        ("localhost", True), ("lg1", False), ("lg2", False)]
    described = plan.describe()
    assert described["mode"] == "distributed" and described["locust_workers"] == 3


def test_an_unreachable_load_generator_stops_the_run_before_it_starts(tmp_path, monkeypatch,
                                                                      capsys):
    """A remote load generator that SSH cannot reach: a one-line error naming the host, exit 1,
    and no result folder (nothing was measured)."""
    import json

    from experiments import cli

    unreachable = {**_remote("lg-gone", [0]), "ansible_host": "127.0.0.1", "ansible_port": 1,
                   "ansible_ssh_common_args": "-o StrictHostKeyChecking=no"}
    services = {name: {"host": "h", "url": "http://127.0.0.1:1", "cpus": [0]}
                for name in SERVICES}
    (tmp_path / "topology.json").write_text(json.dumps(
        {"format_version": 1, "services": services, "loadgen": [unreachable]}))
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path))
    results = tmp_path / "results"
    code = cli.main(["run", "3", "--profile", "smoke", "--results-dir", str(results)])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: load generator 'lg-gone': ssh failed" in err and "Traceback" not in err
    assert not results.exists() or not [p for p in results.iterdir() if p.is_dir()]
