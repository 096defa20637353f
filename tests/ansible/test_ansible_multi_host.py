"""Deploy the lab over SSH to three throwaway hosts made of network namespaces.

Each host is a network namespace with a veth into a bridge in the root namespace (addresses in
198.18.0.0/15 only) and its own sshd. Redis, the model APIs and the scoring handlers go to
different hosts, so a scoring request crosses hosts twice. The namespaces share this machine's
filesystem, so each host has its own run dir. Redis listens on its host's network address, so it
requires the inventory's password: a client from another host without it is refused, the scoring
chain works with it, the secret shows up in no topology, log, result folder or command line, a
deploy without it fails before touching Redis, and a Redis killed by PID comes back (restarted by
supervisord) with its features. Everything is removed in a finalizer, even when the test fails.
With CI=true a missing prerequisite (root, ip, sshd, sudo) fails the test.

The deploy connects as a non-root user with passwordless sudo, as on real hosts (deploy_user.py):
the lab's processes run as that user, and `--tags configure` with a new setting re-renders and
restarts only what it changes, without any install task; a full deploy after it changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from ansible_testutil import (
    ANSIBLE_DIR,
    HTTP_SERVICES,
    ROOT,
    cpus_allowed,
    descendants,
    environ,
    kill_run_dir_processes,
    post_json,
    predict_path,
    require,
    run_dir_processes,
    run_playbook,
    snapshot_sources,
    wait_gone,
)
from deploy_user import DeployUser, process_uid

pytestmark = pytest.mark.slow

SSHD = "/usr/sbin/sshd"
# Host name -> last octet of its address; Redis, model APIs, scoring handlers on three hosts.
HOSTS = {"lab-scoring": 11, "lab-model": 12, "lab-redis": 13}
# A fresh secret per run, given to the deploy by the inventory only.
REDIS_PASSWORD = secrets.token_hex(20)
ENTITIES = 100
PORTS = {
    "redis": 26379,
    "model_sync": 25000,
    "model_async": 28000,
    "scoring_sync": 25001,
    "scoring_async": 28001,
}


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60)


def _find_uv() -> str | None:
    """The real uv binary (a pyenv shim does not work in a bare ssh session): on PATH, else
    where `pip install --user` and the installer put it (the lab role looks there too)."""
    found = shutil.which("uv")
    if found and "/shims/" in found and shutil.which("pyenv"):
        real = _run("pyenv", "which", "uv", check=False).stdout.strip()
        found = real or None
    for candidate in (Path.home() / ".local/bin/uv", Path.home() / ".cargo/bin/uv"):
        if not found and os.access(candidate, os.X_OK):
            found = str(candidate)
    return os.path.realpath(found) if found else None


@dataclass
class NetnsLab:
    """Bridge + namespaces + sshds that this test created (and only those)."""

    tag: str
    subnet: int
    workdir: Path
    bridge: str = ""
    namespaces: list[str] = field(default_factory=list)
    host_veths: list[str] = field(default_factory=list)
    sshds: list[subprocess.Popen] = field(default_factory=list)
    made_run_sshd: bool = False

    def address(self, octet: int) -> str:
        return f"198.18.{self.subnet}.{octet}"

    def create(self, key: Path, user: DeployUser) -> None:
        self.bridge = f"slbr{self.tag}"
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.address(1)}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        if not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", mode=0o755)
            self.made_run_sshd = True
        for index, (name, octet) in enumerate(HOSTS.items()):
            ns, host_end, ns_end = (
                f"sl{self.tag}-{name}",
                f"slh{self.tag}{index}",
                f"sln{self.tag}{index}",
            )
            _run("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            self.host_veths.append(host_end)
            _run("ip", "link", "set", ns_end, "netns", ns)
            _run("ip", "link", "set", host_end, "master", self.bridge)
            _run("ip", "link", "set", host_end, "up")
            _run(
                "ip",
                "netns",
                "exec",
                ns,
                "ip",
                "addr",
                "add",
                f"{self.address(octet)}/24",
                "dev",
                ns_end,
            )
            _run("ip", "netns", "exec", ns, "ip", "link", "set", ns_end, "up")
            _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            self.sshds.append(self._start_sshd(ns, name, self.address(octet), key, user))
        for octet in HOSTS.values():
            self._wait_ssh(self.address(octet))

    def _start_sshd(self, ns: str, name: str, address: str, key: Path,
                    user: DeployUser) -> subprocess.Popen:
        host_key = self.workdir / f"hostkey-{name}"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
        config = self.workdir / f"sshd-{name}.conf"
        config.write_text(
            f"ListenAddress {address}\n"
            "Port 22\n"
            f"HostKey {host_key}\n"
            f"PidFile {self.workdir}/sshd-{name}.pid\n"
            f"AuthorizedKeysFile {key}.pub\n"
            f"AllowUsers {user.name}\n"
            "PermitRootLogin no\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "MaxStartups 50\n"
            "MaxSessions 50\n"
            "Subsystem sftp internal-sftp\n"
        )
        log = open(self.workdir / f"sshd-{name}.log", "w")  # noqa: SIM115 - lives with sshd
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, *user.mount_prefix(), SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def _wait_ssh(self, address: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection((address, 22), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"sshd on {address} did not come up; see {self.workdir}/sshd-*.log")

    def destroy(self) -> None:
        for sshd in self.sshds:
            # The listener and its per-connection children (the ssh sessions of this test).
            for pid in [sshd.pid, *descendants(sshd.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        for sshd in self.sshds:
            try:
                sshd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sshd.kill()
                sshd.wait(timeout=10)
        for ns in self.namespaces:
            _run("ip", "netns", "del", ns, check=False)
        for veth in self.host_veths:
            _run("ip", "link", "del", veth, check=False)
        if self.bridge:
            _run("ip", "link", "del", self.bridge, check=False)
        if self.made_run_sshd:
            shutil.rmtree("/run/sshd", ignore_errors=True)


def _free_subnet() -> int:
    """A /24 of 198.18.0.0/16 that no route uses yet (parallel runs pick different ones)."""
    routes = _run("ip", "-4", "route", "show").stdout
    candidates = [n for n in range(1, 255) if f"198.18.{n}." not in routes]
    return random.choice(candidates)


def _inventory(lab: NetnsLab, key: Path, user: DeployUser, workdir: Path) -> Path:
    hosts = {}
    for name, octet in HOSTS.items():
        hosts[name] = {
            "ansible_host": lab.address(octet),
            "lab_address": lab.address(octet),
            # The namespaces share one filesystem: one run dir per host.
            "lab_run_dir": str(workdir / f"run-{name.removeprefix('lab-')}"),
        }
    ssh_args = (
        "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "
        f"-o ControlPath={workdir}/cp-%C"
    )
    # The namespaces reach no package index: the user's copy of uv's cache has everything.
    uv_env = {"UV_OFFLINE": "1", "UV_CACHE_DIR": str(user.uv_cache)}
    inventory = {
        "all": {
            "vars": {
                "ansible_user": user.name,
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_ssh_private_key_file": str(key),
                "ansible_ssh_common_args": ssh_args,
                "lab_ports": PORTS,
                "lab_uv": user.uv,
                # The interpreter uv's cache was filled for (the one the tests run on).
                "lab_python": user.python,
                "lab_uv_env": uv_env,
                "feature_store_cpus": "0",
                "model_api_cpus": "0",
                "model_api_workers": 1,
                "scoring_handler_cpus": "0" if os.cpu_count() == 1 else "1",
                "scoring_handler_workers": 1,
                "loadgen_cpus": "0",
                "monitor_cpus": "0",
                "feature_store_entities": ENTITIES,
                "feature_store_password": REDIS_PASSWORD,
            },
            "hosts": hosts,
            "children": {
                "feature_store": {"hosts": {"lab-redis": None}},
                "model_api": {"hosts": {"lab-model": None}},
                "scoring_handler": {"hosts": {"lab-scoring": None}},
                # Two load generators: Locust runs distributed (master on the controller).
                "loadgen": {"hosts": {"lab-redis": None, "lab-model": None}},
                "monitor": {"hosts": {name: None for name in HOSTS}},
            },
        }
    }
    path = workdir / "inventory.json"
    path.touch(mode=0o600)  # holds the Redis password; the workdir is open to the deploy user
    path.write_text(json.dumps(inventory, indent=2))
    return path


# Talks RESP to Redis from inside a host's namespace; the password, if any, comes on stdin
# (never on a command line). Prints Redis's raw answers.
_RESP_PROBE = """
import socket, sys
password = sys.stdin.read().strip()
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
if password:
    sock.sendall(b"AUTH " + password.encode() + b"\\r\\n")
    print(sock.recv(256).decode().strip())
sock.sendall(b"PING\\r\\n")
print(sock.recv(256).decode().strip())
sock.sendall(b"DBSIZE\\r\\n")
print(sock.recv(256).decode().strip())
"""


def _redis_from(ns: str, address: str, password: str = "") -> list[str]:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "/usr/bin/python3", "-c", _RESP_PROBE, address,
         str(PORTS["redis"])],
        input=password, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.split()


def _check_redis_auth(lab: NetnsLab, services: dict, state_dir: Path, deploy_log: Path) -> None:
    """Redis on the network: refused without the password from another host, served with it;
    the secret is only in the 0600 files that need it."""
    redis_address = lab.address(HOSTS["lab-redis"])
    scoring_ns = lab.namespaces[list(HOSTS).index("lab-scoring")]
    assert services["redis"]["auth"] is True
    anonymous = _redis_from(scoring_ns, redis_address)
    assert anonymous[0].startswith("-NOAUTH"), anonymous
    assert _redis_from(scoring_ns, redis_address, "wrong-" + REDIS_PASSWORD)[0].startswith(
        "-WRONGPASS")
    authed = _redis_from(scoring_ns, redis_address, REDIS_PASSWORD)
    # the vectors, the entity count and the seeder's saved-at mark (no job queue here)
    assert authed[:2] == ["+OK", "+PONG"] and authed[2] == f":{ENTITIES + 2}", authed
    assert REDIS_PASSWORD not in (state_dir / "topology.json").read_text()
    assert REDIS_PASSWORD not in deploy_log.read_text(errors="replace")
    for proc in os.listdir("/proc"):
        if proc.isdigit():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{proc}/cmdline").read_bytes()
                assert REDIS_PASSWORD.encode() not in cmdline, (proc, cmdline[:200])


def _score(services: dict, entity: str) -> None:
    for name in ("scoring-sync", "scoring-async"):
        status, body = post_json(services[name]["url"] + predict_path(name) + f"?entity={entity}")
        assert status == 200 and isinstance(body["detail"], float), (name, body)


def _redis_killed_comes_back_with_its_features(services: dict) -> float:
    """SIGKILL Redis by PID; supervisord restarts it and it reloads its snapshot: seconds until
    both scoring handlers (on another host) serve the last seeded entity again."""
    os.kill(services["redis"]["pids"], signal.SIGKILL)
    started = time.monotonic()
    while True:
        try:
            _score(services, str(ENTITIES - 1))
            return time.monotonic() - started
        except urllib.error.HTTPError as exc:
            assert exc.code != 404, "the features were lost with the Redis restart"
        except OSError:
            pass
        assert time.monotonic() - started < 60, "Redis did not come back within 60 s"
        time.sleep(0.05)


def _distributed_experiment_3(workdir: Path, state_dir: Path, inventory: Path,
                              lab: NetnsLab) -> None:
    """Experiment 3 (smoke) against the hosts, with Locust distributed over the two load
    generators by SSH: a complete result folder whose requests came from both hosts."""
    results = workdir / "results"
    env = {**os.environ, "LAB_STATE_DIR": str(state_dir)}
    cmd = [sys.executable, "-m", "experiments", "run", "3", "--profile", "smoke",
           "--results-dir", str(results), "--inventory", str(inventory)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    (workdir / "experiment-3.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (folder,) = [p for p in results.iterdir() if p.is_dir()]
    assert folder.name.split("_")[2] == "multi-3hosts"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    loadgen = manifest["loadgen"]
    assert loadgen["mode"] == "distributed" and loadgen["locust_workers"] == 2
    assert [w["host"] for w in loadgen["workers"]] == ["lab-redis", "lab-model"]
    # Only the load generators' own CPU may make a smoke run on two shared cores invalid.
    assert all("CPU" in reason for reason in manifest["validity"]["reasons"]), manifest["validity"]
    senders = set()
    for entry in manifest["scenarios"]:
        locust_dir = folder / entry["locust"]["dir"]
        result = json.loads((locust_dir / "result.json").read_text())
        assert [h["host"] for h in result["hosts"]] == ["lab-redis", "lab-model"]
        for record in result["hosts"]:
            assert "failed" not in record, record
            assert record["stopped_by"] == "master", record
        rows = {p.name.split("_")[1]: sum(1 for _ in p.open()) - 1
                for p in locust_dir.glob("requests_*.csv")}
        senders |= {host for host, n in rows.items() if n > 0}
        assert sum(rows.values()) == result["n_requests"] > 0, rows
    # Users were spread over both hosts' workers.
    assert senders == {"lab-redis", "lab-model"}
    # The samplers on the load-generator hosts saw the workers, labelled as the load generator.
    for host in ("lab-redis", "lab-model"):
        samples = (folder / "raw/resources" / f"{host}.csv").read_text()
        assert ".loadgen." in samples.splitlines()[0], host
    # The capacity search's open-model steps ran distributed too: every stream (one per
    # worker on each host) reported its counts back.
    steps = sorted((folder / "raw/locust/capacity").glob("*/*/result.json"))
    assert steps
    for step in steps:
        counts = json.loads(step.read_text())["open_model"]
        assert counts["streams"] == 2 and counts["streams_reported"] == 2, counts
    # Each host's job directory stays there (one per Locust run: scenarios and capacity
    # steps), and nothing of it runs any more.
    for host in ("redis", "model"):
        assert len(list((workdir / f"run-{host}" / "locust").iterdir())) == len(
            manifest["scenarios"]) + len(steps)
    # The Redis password is in no file of the result folder.
    for path in folder.rglob("*"):
        if path.is_file():
            assert REDIS_PASSWORD.encode() not in path.read_bytes(), path


def _install_task_titles() -> list[str]:
    """The playbook output's title of every task of the roles' install phase."""
    titles = []
    for path in sorted(ANSIBLE_DIR.glob("roles/*/tasks/install.yml")):
        role = path.parent.parent.name
        todo = list(yaml.safe_load(path.read_text()) or [])
        while todo:
            task = todo.pop()
            todo.extend(task.get("block", []))
            if "name" in task and "block" not in task:
                titles.append(f"TASK [{role} : {task['name']}]")
    assert len(titles) > 5, titles
    return titles


def _running_pids(run_dirs: list[Path]) -> dict[str, int]:
    """Main pid of every program of the run dirs' supervisords now, as "<program>@<run dir>"
    (topology.json is older: the test restarted Redis since the deploy wrote it)."""
    pids = {}
    for run_dir in run_dirs:
        done = subprocess.run(
            [str(run_dir / "app/.venv/bin/supervisorctl"), "-c",
             str(run_dir / "supervisor/supervisord.conf"), "status"],
            capture_output=True, text=True, timeout=60)
        for line in done.stdout.splitlines():  # "<name> RUNNING pid <pid>, uptime <t>"
            fields = line.split()
            if len(fields) >= 4 and fields[1] == "RUNNING":
                pids[f"{fields[0]}@{run_dir.name}"] = int(fields[3].rstrip(","))
    return pids


def _configure_restarts_only_what_changed(workdir: Path, state_dir: Path, inventory: Path,
                                          extra: dict, run_dirs: list[Path],
                                          user: DeployUser) -> None:
    """`--tags configure` with one new setting (two workers per model API): no install task
    runs, the venvs stay as they are, only the model APIs restart (with the setting), the
    other hosts report no change; a full deploy with the same setting then changes nothing."""
    before = _running_pids(run_dirs)
    assert len(before) == 8, before  # redis, 2 model APIs, 2 scoring handlers, 3 monitors
    stamps = {d: (d / "app/.venv/scoring-lab-stamp").stat().st_mtime_ns for d in run_dirs}
    setting = {**extra, "model_api_workers": 2}
    run = run_playbook("deploy.yml", workdir / "deploy-configure.log", state_dir, setting,
                       inventory, args=("--tags", "configure"))
    assert run.returncode == 0, run.explain()
    ran = [title for title in _install_task_titles() if title in run.output]
    assert ran == [], f"install tasks ran under --tags configure: {ran}"
    assert "RUNNING HANDLER [model_api : Restart model API]" in run.output, run.explain()
    recap = run.recap()
    assert recap["lab-model"]["changed"] > 0, run.explain()
    assert recap["lab-redis"]["changed"] == recap["lab-scoring"]["changed"] == 0, run.explain()
    assert {d: (d / "app/.venv/scoring-lab-stamp").stat().st_mtime_ns for d in run_dirs} == stamps

    after = _running_pids(run_dirs)
    assert set(after) == set(before), after
    restarted = sorted(name for name in before if after[name] != before[name])
    assert restarted == ["model-async@run-model", "model-sync@run-model"], restarted
    # The configure run verified the restarted programs and wrote their new pids.
    services = json.loads((state_dir / "topology.json").read_text())["services"]
    for name in ("model-sync", "model-async"):
        entry = services[name]
        assert entry["pids"] == after[f"{name}@run-model"] and entry["workers"] == 2, entry
        assert environ(entry["pids"]).get("SCORING_LAB_WORKERS") == "2", name
        assert process_uid(entry["pids"]) == user.uid, name

    again = run_playbook("deploy.yml", workdir / "deploy-after-configure.log", state_dir,
                         setting, inventory)
    assert again.returncode == 0, again.explain()
    assert all(again.recap()[host]["changed"] == 0 for host in HOSTS), again.explain()


def test_multi_host_deploy_over_ssh_to_network_namespaces() -> None:
    require(os.geteuid() == 0, "needs root (ip netns, sshd)")
    require(shutil.which("ip") is not None, "ip (iproute2) is not installed")
    require(os.access(SSHD, os.X_OK), f"{SSHD} (openssh-server) is not installed")
    require(shutil.which("ssh") is not None, "ssh (openssh-client) is not installed")
    require(shutil.which("ssh-keygen") is not None, "ssh-keygen is not installed")
    require(_run("ip", "netns", "list", check=False).returncode == 0, "ip netns does not work here")
    for command in ("useradd", "userdel", "runuser", "unshare", "sudo", "visudo"):
        require(shutil.which(command) is not None, f"{command} is not installed")
    uv = _find_uv()
    require(uv is not None, "uv is not installed")

    workdir = Path(tempfile.mkdtemp(prefix="sl-multi-", dir="/tmp"))
    state_dir = workdir / "state"
    state_dir.mkdir()
    lab = NetnsLab(tag=f"{os.getpid() % 10000:04d}", subnet=_free_subnet(), workdir=workdir)
    run_dirs = [workdir / f"run-{name.removeprefix('lab-')}" for name in HOSTS]
    user = DeployUser(workdir)
    deployed = finished = False
    try:
        key = workdir / "id_ed25519"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        user.create(uv)
        lab.create(key, user)
        inventory = _inventory(lab, key, user, workdir)
        source = snapshot_sources(workdir / "src")
        extra = {"lab_source_dir": str(source)}

        deployed = True
        deploy = run_playbook(
            "deploy.yml", workdir / "deploy.log", state_dir, extra, inventory, timeout=900
        )
        assert deploy.returncode == 0, deploy.explain()
        assert set(deploy.recap()) >= set(HOSTS), deploy.explain()

        topology = json.loads((state_dir / "topology.json").read_text())
        services = topology["services"]
        scoring, model, redis = (lab.address(HOSTS[h]) for h in HOSTS)
        assert services["redis"]["host"] == "lab-redis"
        assert services["redis"]["url"] == f"redis://{redis}:{PORTS['redis']}/0"
        for arch in ("sync", "async"):
            assert services[f"model-{arch}"]["address"] == model
            assert services[f"scoring-{arch}"]["address"] == scoring
            assert services[f"scoring-{arch}"]["model_url"] == services[f"model-{arch}"]["url"]
            assert services[f"scoring-{arch}"]["redis_url"] == services["redis"]["url"]
        assert {s["run_dir"] for s in services.values()} == {str(d) for d in run_dirs}
        assert [m["host"] for m in topology["monitor"]] == list(HOSTS)
        assert topology["loadgen"][0]["ansible_host"] == redis
        assert topology["loadgen"][0]["ansible_user"] == user.name
        # Every lab process runs as the deploy user; the run dirs (created with sudo: their
        # parent is root's) belong to it.
        labelled = {**services, **{f"monitor@{m['host']}": m for m in topology["monitor"]}}
        for name, entry in labelled.items():
            assert entry["affinity"] == entry["cpus"], name
            for member in [entry["pids"], *descendants(entry["pids"])]:
                assert cpus_allowed(member) == entry["cpus"], (name, member)
                assert process_uid(member) == user.uid, (name, member)
        assert {run_dir.stat().st_uid for run_dir in run_dirs} == {user.uid}
        assert "TASK [lab : Create the run directory for the deploy user]" in deploy.output

        # A scoring request per architecture to the scoring host's address, sent from the root
        # namespace through the bridge; the handler then calls the model host and Redis host.
        for name in ("scoring-sync", "scoring-async"):
            status, body = post_json(services[name]["url"] + predict_path(name))
            assert status == 200 and isinstance(body["detail"], float), (name, body)
        # The same from inside another host (the Redis host's namespace).
        probe = (
            "import json, sys, urllib.request as u; "
            "r = u.Request(sys.argv[1], data=b'[5.1,3.5,1.4,0.2]', "
            "headers={'Content-Type': 'application/json'}); "
            "print(json.loads(u.urlopen(r, timeout=10).read())['detail'])"
        )
        redis_ns = lab.namespaces[list(HOSTS).index("lab-redis")]
        url = services["scoring-async"]["url"] + predict_path("scoring-async")
        out = _run("ip", "netns", "exec", redis_ns, "/usr/bin/python3", "-c", probe, url)
        float(out.stdout.strip())
        # Redis listens on its host's lab address only: not on loopback in its namespace.
        no_loopback = _run(
            "ip",
            "netns",
            "exec",
            redis_ns,
            "/usr/bin/python3",
            "-c",
            f"import socket; socket.create_connection(('127.0.0.1', {PORTS['redis']}), 2)",
            check=False,
        )
        assert no_loopback.returncode != 0
        for name in HTTP_SERVICES:
            assert services[name]["workers"] == 1

        # --- Redis requires the inventory's password; its features survive a kill ----------
        _check_redis_auth(lab, services, state_dir, deploy.log)
        back_s = _redis_killed_comes_back_with_its_features(services)
        print(f"\nRedis SIGKILLed: both scoring handlers served its features after {back_s:.2f} s")
        # Without the password the deploy stops at the feature store's preflight, Redis untouched.
        refused = run_playbook(
            "deploy.yml", workdir / "deploy-no-password.log", state_dir,
            {**extra, "feature_store_password": ""}, inventory, args=("--limit", "lab-redis"))
        assert refused.returncode != 0
        assert "is not loopback: set feature_store_password" in refused.output, refused.explain()
        assert _redis_from(lab.namespaces[list(HOSTS).index("lab-scoring")],
                           redis, REDIS_PASSWORD)[:2] == ["+OK", "+PONG"]

        _distributed_experiment_3(workdir, state_dir, inventory, lab)
        _configure_restarts_only_what_changed(workdir, state_dir, inventory, extra, run_dirs, user)

        down = run_playbook("teardown.yml", workdir / "teardown.log", state_dir, extra, inventory)
        assert down.returncode == 0, down.explain()
        deployed = False
        for run_dir in run_dirs:
            assert wait_gone(run_dir) == [], run_dir
        finished = True
    finally:
        if deployed:
            run_playbook(
                "teardown.yml", workdir / "teardown-finalizer.log", state_dir, extra, inventory
            )
        for run_dir in run_dirs:
            kill_run_dir_processes(run_dir)
        lab.destroy()
        left_user = user.remove()
        if left_user:
            print(f"\nWARNING {left_user}")
        netns_left = [
            ns
            for ns in _run("ip", "netns", "list").stdout.split()
            if ns.startswith(f"sl{lab.tag}-")
        ]
        procs_left = [proc for run_dir in run_dirs for proc in run_dir_processes(run_dir)]
        if finished:  # else the test's own failure is the one to report
            shutil.rmtree(workdir, ignore_errors=True)
            assert not netns_left, f"namespaces left: {netns_left}"
            assert not procs_left, f"processes left: {procs_left}"
