"""Fixtures shared by the whole suite: free ports, a real redis-server, real service processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

# Shared with experiments/tools' probes; tests import them from here too.
from experiments.tools.procs import free_port, stop, wait_until
from services import bentoml_model
from tests.slow import mark_slow_fixtures, only_in_slow_tests, running

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"


# `make test-fast` runs -m "not slow" (tests/slow.py says which tests carry the mark).
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_slow_fixtures(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    with running(item):
        return (yield)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def require(tool: str) -> str:
    """The tool's path; in CI a missing tool fails the test instead of skipping it."""
    sbin = Path("/usr/sbin") / tool  # sshd and friends live outside a user's PATH
    path = shutil.which(tool) or (str(sbin) if sbin.exists() else None)
    if path is None:
        if IN_CI:
            pytest.fail(f"{tool} is required in CI but is not installed")
        pytest.skip(f"{tool} is not installed")
    return path


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def start_redis(tmp: Path, port: int | None = None) -> RedisServer:
    """A private redis-server (on ``port``, e.g. to restart one, else a free port)."""
    binary = require("redis-server")
    tmp.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    server = RedisServer(port, process)

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_until(answers, 10, f"redis-server on port {port}")
    return server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    stop(server.process)


@pytest.fixture(scope="session")
def seeded_redis(redis_server) -> RedisServer:
    subprocess.run(
        [sys.executable, "-m", "services", "seed", "--redis-url", redis_server.url,
         "--entities", "50"],
        check=True, cwd=ROOT, capture_output=True,
    )
    return redis_server


def start_service(role: str, arch: str, port: int, env: dict[str, str], log: Path):
    """A real gunicorn or uvicorn master running one lab service, as the deployment runs it."""
    only_in_slow_tests(f"starts a real {role}-{arch} service")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SCORING_LAB_")}
    full_env.update({"SCORING_LAB_PORT": str(port), "SCORING_LAB_SERVICE": f"{role}-{arch}"})
    full_env.update(env)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services", "serve", "--role", role, "--arch", arch],
            cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until(
            lambda: process.poll() is None
            and http_ok(f"http://127.0.0.1:{port}/api/v1/healthcheck"),
            60, f"{role}-{arch} on port {port} (log: {log})", interval=0.2,
        )
    except TimeoutError:
        stop(process)
        raise
    return process


def start_bentoml(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    """The BentoML model server (services/bentoml_model/) from its own venv, as the deployment
    runs it: ``python -m services.bentoml_model`` with SCORING_LAB_* settings; BentoML's home
    (its model store, its metrics' files) under the log's folder."""
    only_in_slow_tests("starts the BentoML model server")
    python = ROOT / bentoml_model.VENV / "bin" / "python"
    if not python.exists():
        message = f"{python} is missing: `make setup` makes it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SCORING_LAB_")}
    full_env.update({"SCORING_LAB_PORT": str(port), "SCORING_LAB_SERVICE": "model-bentoml",
                     "BENTOML_HOME": str(log.parent / f"bentoml-home-{port}"),
                     "BENTOML_DO_NOT_TRACK": "True"})
    full_env.update(env)
    with log.open("wb") as out:
        process = subprocess.Popen([str(python), "-m", "services.bentoml_model"], cwd=ROOT,
                                   env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        # BentoML's arbiter and workers each import it (seconds apiece on a loaded machine).
        wait_until(
            lambda: process.poll() is None
            and http_ok(f"http://127.0.0.1:{port}/api/v1/healthcheck"),
            120, f"the BentoML model server on port {port} (log: {log})", interval=0.3,
        )
    except TimeoutError:
        stop(process)
        raise
    return process


def queue_workers_ready(arch: str, redis_url: str) -> int:
    """How many queue workers of ``arch`` have registered with the queue in Redis (RQ's worker
    set, SAQ's live worker stats)."""
    import time

    import redis

    from services.jobs import QUEUE_NAMES
    from services.settings import Arch

    name = QUEUE_NAMES[Arch(arch)]
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        if arch == "sync":
            return client.scard(f"rq:workers:{name}")
        return client.zcount(f"saq:{name}:stats", int(time.time() * 1000), "+inf")
    except redis.RedisError:
        return 0
    finally:
        client.close()


def start_queue_workers(arch: str, env: dict[str, str], log: Path, workers: int = 1):
    """The job queue's workers of one architecture (``serve --role queue``), as the deployment
    runs them: a master and ``workers`` worker processes, waited for until all registered."""
    only_in_slow_tests(f"starts real queue-{arch} workers")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SCORING_LAB_")}
    full_env.update({"SCORING_LAB_SERVICE": f"queue-{arch}", **env,
                     "SCORING_LAB_WORKERS": str(workers)})
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services", "serve", "--role", "queue", "--arch", arch],
            cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until(lambda: process.poll() is None
                   and queue_workers_ready(arch, full_env["SCORING_LAB_REDIS_URL"]) >= workers,
                   60, f"{workers} queue-{arch} worker(s) (log: {log})", interval=0.2)
    except TimeoutError:
        stop(process)
        raise
    return process


# --------------------------------------------------------------------- a private deployed lab


@dataclass
class PrivateLab:
    """A lab deployed from a copy of the single-host inventory whose host_vars move every port
    and the run dir (and pin the app's sources to a snapshot), so a test never touches a
    developer's lab. `env` carries LAB_STATE_DIR for the experiments and playbooks."""

    root: Path
    inventory: Path
    env: dict[str, str]
    results: Path

    def playbook(self, name: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(self.inventory),
             name], cwd=ROOT / "ansible", env=self.env, capture_output=True, text=True,
            timeout=timeout)

    def run_smoke(self, package: str, timeout: float) -> Path:
        """Run an experiment's smoke profile on this lab in a subprocess (as `make` would:
        its own interpreter, the lab's env) into results-<package's short name>; the one run
        folder it made."""
        results = self.root / f"results-{package.split('_')[0]}"
        run = ("import sys; from pathlib import Path; "
               f"from experiments.{package} import EXPERIMENT; "
               "from experiments.lab.session import RunOptions; "
               "print(EXPERIMENT.execute('smoke', RunOptions(Path(sys.argv[1]), sys.argv[2], "
               "str(Path(sys.executable).with_name('ansible-playbook')))))")
        done = subprocess.run([sys.executable, "-c", run, str(results), str(self.inventory)],
                              cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
        runs = [p for p in results.iterdir() if p.is_dir()]
        assert len(runs) == 1, runs
        assert done.stdout.strip().endswith(runs[0].name), done.stdout[-500:]
        return runs[0]


def private_lab_inventory(tmp: Path, *, snapshot: bool = True) -> PrivateLab:
    """Write the inventory copy (free ports, run dir under tmp, 50 entities); with snapshot,
    the deploys read a copy of the sources taken now (edits in the work tree during the test
    do not restart the lab between two deploys)."""
    inventory = tmp / "inventory"
    shutil.copytree(ROOT / "ansible/inventories/single-host", inventory)
    (inventory / "host_vars").mkdir()
    ports = {name: free_port() for name in
             ("redis", "model_sync", "model_async", "scoring_sync", "scoring_async")}
    host_vars = {"lab_run_dir": str(tmp / "run"), "lab_ports": ports,
                 "feature_store_entities": 50}
    if snapshot:
        src = tmp / "src"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
        # everything the lab bundle (ansible/roles/lab/files/lab_bundle.py) packs
        for entry in ("pyproject.toml", "uv.lock", "README.md", "nix", "services", "hardware",
                      "experiments"):
            if (ROOT / entry).is_dir():
                shutil.copytree(ROOT / entry, src / entry, ignore=ignore)
            else:
                src.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / entry, src / entry)
        host_vars["lab_source_dir"] = str(src)
    (inventory / "host_vars/localhost.yml").write_text(json.dumps(host_vars))
    env = {**os.environ, "LAB_STATE_DIR": str(tmp / "state")}
    return PrivateLab(tmp, inventory, env, tmp / "results")


@contextmanager
def private_lab(tmp: Path) -> Iterator[PrivateLab]:
    """Deploy a private lab (see PrivateLab); tear it down at the end, whatever happened."""
    only_in_slow_tests("deploys a private lab")
    require("redis-server")
    require("taskset")
    lab = private_lab_inventory(tmp)
    try:
        done = lab.playbook("deploy.yml")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        yield lab
    finally:
        lab.playbook("teardown.yml", timeout=300)


@pytest.fixture(scope="session")
def experiments_lab(tmp_path_factory) -> Iterator[PrivateLab]:
    """One private lab shared by the experiment smoke runs that start from the default build
    (experiments 2, 4, 5 and 6; 4-6 redeploy it per rung and restore the default at the end)."""
    with private_lab(tmp_path_factory.mktemp("experiments-lab")) as lab:
        yield lab

