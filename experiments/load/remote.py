"""The controller's side of a distributed Locust run: one ``worker_host`` process per
load-generator host, started over SSH (or as a subprocess when the host is the controller
itself), each running that host's Locust workers against a master on the controller.

The SSH connection is the lifeline: its stdin carries the job and then stays open; closing it
(normal end, Ctrl-C, a crash of the runner) stops that host's workers. Its stdout brings the
host's files back as a tar stream, which lands in ``<out_dir>/hosts/<host>/``; the request
logs move up into ``out_dir`` next to the local ones, so the analysis reads one directory.

The SSH options come from the inventory through topology.json (ansible_host, ansible_user,
ansible_port, ansible_ssh_private_key_file, ansible_ssh_common_args/extra_args), so the runner
reaches a host exactly as Ansible did.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import subprocess
import sys
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from experiments.constants import REPO_ROOT
from experiments.load.procs import kill_group
from experiments.load.worker_host import Job

SSH_CONNECT_TIMEOUT_S = 10


class RemoteError(RuntimeError):
    """A load-generator host cannot be reached or used; the message says which and why."""


@dataclass(frozen=True)
class WorkerHost:
    """A load-generator host as the runner drives it."""

    host: str
    cpus: list[int]
    local: bool
    run_dir: str = ""          # the lab's run dir there; jobs go under <run_dir>/locust/
    app_dir: str = ""          # the deployed app (its experiments package) there
    python: str = ""           # the lab venv's python there
    taskset: str = "taskset"
    ssh: dict[str, Any] = field(default_factory=dict)

    @property
    def workers(self) -> int:
        """One Locust worker per core it may use (a Locust process uses one core)."""
        return max(1, len(self.cpus))

    @classmethod
    def from_topology(cls, entry: dict[str, Any], local: bool) -> WorkerHost:
        return cls(host=entry["host"], cpus=[int(c) for c in entry.get("cpus") or []],
                   local=local, run_dir=entry.get("run_dir") or "",
                   app_dir=entry.get("app_dir") or "", python=entry.get("python") or "",
                   taskset=entry.get("taskset") or "taskset",
                   ssh={k: entry.get(k) for k in (
                       "ansible_host", "ansible_user", "ansible_port",
                       "ansible_ssh_private_key_file", "ansible_ssh_common_args",
                       "ansible_ssh_extra_args")})

    def ssh_command(self, remote: str) -> list[str]:
        """ssh to this host with the inventory's connection settings, running `remote`."""
        s = self.ssh
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}"]
        if s.get("ansible_port"):
            cmd += ["-p", str(s["ansible_port"])]
        if s.get("ansible_ssh_private_key_file"):
            cmd += ["-i", str(Path(s["ansible_ssh_private_key_file"]).expanduser())]
        if s.get("ansible_user"):
            cmd += ["-l", str(s["ansible_user"])]
        for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
            cmd += shlex.split(s.get(key) or "")
        return [*cmd, str(s.get("ansible_host") or self.host), remote]

    def job_command(self) -> list[str]:
        """How to start worker_host there."""
        if self.local:
            return [sys.executable, "-m", "experiments.load.worker_host"]
        if not (self.app_dir and self.python):
            raise RemoteError(f"load generator {self.host!r}: topology.json has no app_dir/"
                              "python for it; redeploy the lab (make deploy)")
        return self.ssh_command(f"cd {shlex.quote(self.app_dir)} && exec "
                                f"{shlex.quote(self.python)} -m experiments.load.worker_host")

    def job_dir(self, name: str) -> str:
        base = Path(self.run_dir) if self.run_dir else REPO_ROOT / ".lab"
        return str(base / "locust" / name)


def controller_address(host: WorkerHost) -> str:
    """The controller's address as `host` sees it (the client end of an SSH connection to it):
    where that host's workers reach the Locust master. Also proves SSH works, early."""
    done = subprocess.run(host.ssh_command("echo $SSH_CONNECTION"), capture_output=True,
                          text=True, timeout=SSH_CONNECT_TIMEOUT_S + 20,
                          stdin=subprocess.DEVNULL)
    fields = done.stdout.split()
    if done.returncode != 0 or len(fields) != 4:
        raise RemoteError(f"load generator {host.host!r}: ssh failed (exit {done.returncode}): "
                          f"{(done.stderr or done.stdout).strip()[:300]}")
    return fields[0]


def master_bind_address(hosts: list[WorkerHost]) -> tuple[str, dict[str, str]]:
    """Where the master listens, and the address each host's workers connect to: loopback
    when every load generator is the controller; the one address the remote hosts see the
    controller at; or every address when they see it at several, or some are local."""
    reach = {h.host: ("127.0.0.1" if h.local else controller_address(h)) for h in hosts}
    addresses = set(reach.values())
    return (addresses.pop() if len(addresses) == 1 else "0.0.0.0"), reach


class HostRun:
    """One host's worker_host process during a run."""

    def __init__(self, host: WorkerHost, job: Job, out_dir: Path) -> None:
        self.host = host
        self.job = job
        self.dir = out_dir / "hosts" / host.host
        self.dir.mkdir(parents=True, exist_ok=False)
        self.tar_path = self.dir / "transfer.tar"
        self.command = host.job_command()
        self._tar = self.tar_path.open("wb")
        self._log = (self.dir / "worker_host.log").open("wb")
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=self._tar,
                                     stderr=self._log, cwd=str(REPO_ROOT),
                                     start_new_session=True)
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(asdict(job)) + "\n").encode())
        self.proc.stdin.flush()

    def wait(self, timeout_s: float) -> None:
        """Wait for the host to end its workers and send its files (the stdin stays open
        meanwhile: closing it would stop them)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout_s)

    def close(self) -> None:
        """Stop whatever still runs there: EOF on stdin, then signals to the local end."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
        self._tar.close()
        self._log.close()

    def unpack(self, out_dir: Path) -> dict[str, Any]:
        """Extract the host's files; move its request (and job) logs into out_dir. Returns its
        host_result.json, or a failure record when the host sent nothing usable."""
        if self.tar_path.stat().st_size == 0:
            log = (self.dir / "worker_host.log").relative_to(out_dir)
            return self._failed(f"sent no files (exit {self.proc.returncode}); see {log}")
        try:
            with tarfile.open(self.tar_path) as archive:
                archive.extractall(self.dir, filter="data")
        except tarfile.TarError as exc:
            return self._failed(f"sent a broken tar stream ({exc})")
        self.tar_path.unlink()
        logs = [*self.dir.glob("requests_*.csv"), *self.dir.glob("jobs_*.csv")]
        for csv_path in sorted(logs):
            shutil.move(csv_path, out_dir / csv_path.name)
        try:
            return json.loads((self.dir / "host_result.json").read_text())
        except (OSError, ValueError):
            return self._failed("sent no host_result.json")

    def _failed(self, why: str) -> dict[str, Any]:
        return {"host": self.host.host, "failed": f"load generator {self.host.host!r} {why}"}

    def logs(self) -> list[Path]:
        return sorted(self.dir.glob("locust_worker*.log")) + [self.dir / "worker_host.log"]
