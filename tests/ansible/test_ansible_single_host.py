"""Deploy the whole lab to this machine with the default (single-host) inventory.

Ports, run dir and controller state dir are moved so the test does not collide with a
developer's running lab. Checks: health checks, one scoring request and one job (done by the
queue workers) per architecture, every process's CPU affinity equals its CPU set,
topology.json, Redis bound to the lab address only, a second deploy and a --check --diff run
report no change, the seeded features survive a Redis restart (supervisorctl restart, and
SIGKILL with supervisord restarting it), a deploy with a Redis password makes Redis refuse
unauthenticated clients while every lab client still works and the secret stays out of
topology.json, logs, command lines and world-readable files, teardown leaves no process.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
from pathlib import Path

import pytest
import redis as redis_py
from ansible_testutil import (
    HTTP_SERVICES,
    QUEUE_SERVICES,
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

from services import features

pytestmark = pytest.mark.slow
ENTITIES = 1000  # the single-host inventory's feature_store_entities
LAST_ENTITY = str(ENTITIES - 1)


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


def _supervisorctl(run_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [str(run_dir / "app/.venv/bin/supervisorctl"), "-c",
         str(run_dir / "supervisor/supervisord.conf"), *args],
        capture_output=True, text=True, timeout=60)
    return done.stdout.strip()


def _redis_pid(run_dir: Path) -> int:
    out = _supervisorctl(run_dir, "pid", "redis")
    return int(out) if out.isdigit() else 0


def _score_until_ok(services: dict, entity: str, timeout: float = 60) -> float:
    """Seconds until both scoring handlers answer 200 for the entity (a 404 means the features
    were lost, and fails at once; a 503 while Redis is down is retried)."""
    started = time.monotonic()
    pending = ["scoring-sync", "scoring-async"]
    while pending:
        name = pending[0]
        try:
            status, body = post_json(services[name]["url"] + predict_path(name)
                                     + f"?entity={entity}")
            assert status == 200 and isinstance(body["detail"], float), (name, body)
            pending.pop(0)
        except urllib.error.HTTPError as exc:
            assert exc.code != 404, f"{name}: entity {entity} is gone after the Redis restart"
        except (urllib.error.URLError, OSError):
            pass
        if pending:
            assert time.monotonic() - started < timeout, f"{pending} still failing"
            time.sleep(0.05)
    return time.monotonic() - started


def _features_survive_restarts(run_dir: Path, services: dict, port: int,
                               password: str | None = None) -> dict[str, float]:
    """Restart Redis twice (supervisorctl, then SIGKILL and supervisord's autorestart) and
    time until the seeded features are served again, without any reseeding."""
    assert (run_dir / "state/redis/features.rdb").stat().st_size > 0
    timings = {}
    before = _redis_pid(run_dir)
    started = time.monotonic()
    assert "started" in _supervisorctl(run_dir, "restart", "redis")
    after = _redis_pid(run_dir)
    assert after not in (0, before)
    timings["supervisorctl restart -> both scoring handlers serve it"] = (
        time.monotonic() - started + _score_until_ok(services, LAST_ENTITY))

    store = redis_py.Redis(host="127.0.0.1", port=port, password=password,
                           socket_connect_timeout=1, socket_timeout=1)
    started = time.monotonic()
    os.kill(after, signal.SIGKILL)
    while True:  # Redis itself: accepting connections with its snapshot loaded
        try:
            if store.exists(features.key(LAST_ENTITY)):
                break
        except redis_py.ConnectionError:  # refused, or still loading
            pass
        assert time.monotonic() - started < 60, "Redis did not come back"
        time.sleep(0.02)
    timings["SIGKILL -> Redis serves the entity"] = time.monotonic() - started
    timings["SIGKILL -> both scoring handlers serve it"] = (
        time.monotonic() - started + _score_until_ok(services, LAST_ENTITY))
    assert _redis_pid(run_dir) not in (0, after)
    # every vector and the entity count (the job queues keep keys of their own in this Redis)
    assert len(store.keys(features.KEY_PREFIX + "*")) == ENTITIES
    assert features.stored_entities(store) == ENTITIES
    store.close()
    return {k: round(v, 3) for k, v in timings.items()}


def _secret_kept(secret: str, run_dir: Path, state_dir: Path, logs: list[Path]) -> None:
    """The Redis password is nowhere but in the owner-only files that need it."""
    assert secret not in (state_dir / "topology.json").read_text()
    for log in logs:
        assert secret not in log.read_text(errors="replace"), log
    for path in (run_dir / "logs").rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    holders = set()
    for path in [*(run_dir / "supervisor").rglob("*"), *(run_dir / "state").rglob("*")]:
        if path.is_file() and not path.is_socket() and secret.encode() in path.read_bytes():
            holders.add(path.relative_to(run_dir).as_posix())
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert holders == {"state/redis/redis.conf", "state/redis/password",
                       "supervisor/conf.d/scoring-sync.conf",
                       "supervisor/conf.d/scoring-async.conf",
                       "supervisor/conf.d/queue-sync.conf",
                       "supervisor/conf.d/queue-async.conf"}, holders
    for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert secret.encode() not in cmdline, (pid, cmdline[:200])


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
        return run_playbook(name, workdir / log, state_dir, extra_vars=extra,
                            args=(*secret_args, *args))

    secret_args: tuple[str, ...] = ()

    deployed = False
    try:
        first = playbook("deploy.yml", "deploy-1.log")
        deployed = True
        assert first.returncode == 0, first.explain()

        topology = json.loads((state_dir / "topology.json").read_text())
        services = topology["services"]
        assert topology["format_version"] == 1
        assert set(services) == {"redis", *HTTP_SERVICES, *QUEUE_SERVICES}
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
            # the job queue's workers share the scoring handlers' CPU set (group_vars/all.yml)
            "queue-sync": layout["scoring"],
            "queue-async": layout["scoring"],
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
            assert entry["cpus"] == cpu_list(expected_cpus[name]), name
            assert entry["affinity"] == entry["cpus"], name
            assert entry["run_dir"] == str(run_dir)
            assert entry["workers"] is None
            if name in QUEUE_SERVICES:  # no port: they take jobs from Redis
                assert "port" not in entry and entry["redis_url"] == f"redis://127.0.0.1:{redis}/0"
                continue
            assert entry["port"] == expected_ports[name]
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
            if name in (*HTTP_SERVICES, *QUEUE_SERVICES):
                assert len(family) >= 2, f"{name} has no worker processes: {family}"

        # --- health checks and one scoring request per architecture -------------------------
        for name in HTTP_SERVICES:
            status, body = get_json(services[name]["url"] + "/api/v1/healthcheck")
            assert (status, body) == (200, {"status": "OK"}), name
        for name in ("scoring-sync", "scoring-async"):
            status, body = post_json(services[name]["url"] + predict_path(name))
            assert status == 200 and isinstance(body["detail"], float), (name, body)
        # --- one job per architecture through its scoring handler, done by the queue workers -
        for name in QUEUE_SERVICES:
            arch = name.split("-")[1]
            scoring = services[f"scoring-{arch}"]["url"]
            status, body = post_json(f"{scoring}/api/v1/ml/{arch}/jobs?entity={LAST_ENTITY}")
            assert status == 202 and body["status"] == "pending", (name, body)
            deadline = time.monotonic() + 30
            while body["status"] == "pending" and time.monotonic() < deadline:
                time.sleep(0.1)
                status, body = get_json(f"{scoring}/api/v1/ml/{arch}/jobs/{body['id']}")
            assert body["status"] == "done", (name, body)
            assert isinstance(body["result"]["detail"], float), (name, body)

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

        # --- the seeded features survive a Redis restart, without a reseed ------------------
        assert services["redis"]["auth"] is False
        timings = _features_survive_restarts(run_dir, services, redis)
        print(f"\nRedis restart -> both scoring handlers answer the seeded entity: {timings}")

        # --- a Redis password: refused without it, every lab client has it ------------------
        # As an inventory would hold it (a vars file, 0600), never on a command line.
        secret = secrets.token_hex(20)
        secret_file = workdir / "secrets.json"
        secret_file.touch(mode=0o600)
        secret_file.write_text(json.dumps({"feature_store_password": secret}))
        secret_args = ("-e", f"@{secret_file}")
        with_auth = playbook("deploy.yml", "deploy-auth.log")
        assert with_auth.returncode == 0, with_auth.explain()
        # Redis restarted with its new redis.conf and reloaded its snapshot: no reseed.
        assert "RUNNING HANDLER [feature_store : Restart redis]" in with_auth.output
        seed_task = with_auth.output.split("TASK [feature_store : Seed the features", 1)[1]
        assert seed_task.split("TASK [", 1)[0].count("ok: [localhost]") == 1, seed_task[:400]
        topology = json.loads((state_dir / "topology.json").read_text())
        services = topology["services"]
        assert services["redis"]["auth"] is True
        assert services["scoring-sync"]["redis_url"] == f"redis://127.0.0.1:{redis}/0"
        anonymous = redis_py.Redis(host="127.0.0.1", port=redis, socket_timeout=5)
        with pytest.raises(redis_py.AuthenticationError):
            anonymous.ping()
        with pytest.raises(redis_py.AuthenticationError):
            redis_py.Redis(host="127.0.0.1", port=redis, password="wrong" + secret).ping()
        authed = redis_py.Redis(host="127.0.0.1", port=redis, password=secret)
        assert len(authed.keys(features.KEY_PREFIX + "*")) == ENTITIES
        authed.close()
        _score_until_ok(services, LAST_ENTITY)
        again = playbook("deploy.yml", "deploy-auth-2.log")
        assert again.returncode == 0, again.explain()
        assert again.recap()["localhost"]["changed"] == 0, again.explain()
        check = playbook("deploy.yml", "deploy-auth-check.log", "--check", "--diff")
        assert check.returncode == 0, check.explain()
        assert check.recap()["localhost"]["changed"] == 0, check.explain()
        # (restarts move Redis's pid, so topology.json would change: after the idempotence runs)
        print(f"with a password: {_features_survive_restarts(run_dir, services, redis, secret)}")
        _secret_kept(secret, run_dir, state_dir, [with_auth.log, again.log, check.log])

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
