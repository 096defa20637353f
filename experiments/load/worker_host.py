"""The load-generator side of a distributed Locust run: started by the controller on each
load-generator host (over SSH, or as a plain subprocess on the controller itself), it runs that
host's Locust workers and gives their output back.

    cd <app dir> && <venv python> -m experiments.load.worker_host   (stdin: one JSON line)

Protocol, chosen so that one SSH connection does everything and nothing outlives it:

- stdin, first line: the job (see ``Job``): where the master listens, how many workers, the
  CPUs to pin them to, the scenario file's content, the guard's parameters, a deadline.
- stdin stays open while the controller waits; EOF (the controller closed it, died, or the SSH
  connection dropped) stops the workers at once.
- The workers end when the master ends the run (Locust sends them ``quit``), or at the
  deadline, whichever comes first: the host never keeps sending load by itself.
- stdout, at the end: a tar stream of the job's directory: ``requests_<host>_<pid>.csv`` (every
  request, as the locustfile writes it), ``locust_worker<i>.log``, ``scenario.json``,
  ``guard.json`` (this host's CPU guard, the same rule as a local run) and
  ``host_result.json``. Diagnostics go to stderr.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from experiments.load.procs import CpuGuard, kill_group
from experiments.protocol import GuardParams
from experiments.results import slug

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
# Seconds the workers get to quit by themselves after the master ended the run.
QUIT_GRACE_S = 15.0


@dataclass(frozen=True)
class Job:
    host: str               # the inventory name, used in file names
    out_dir: str            # on this host; created, never reused (the controller names it)
    master_host: str
    master_port: int
    workers: int
    cpus: list[int]
    taskset: str            # path of taskset on this host ("" = do not pin)
    scenario: dict[str, Any]
    guard: dict[str, float]
    deadline_s: float       # from start; the workers are killed after it
    env: dict[str, str]

    @classmethod
    def from_json(cls, line: str) -> Job:
        raw = json.loads(line)
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__})


def worker_command(master_host: str, master_port: int, pin: list[str],
                   python: str = sys.executable) -> list[str]:
    """One Locust worker process (here or on the controller, with local workers)."""
    return [*pin, python, "-m", "locust", "-f", str(LOCUSTFILE), "--worker",
            "--master-host", master_host, "--master-port", str(master_port),
            "--loglevel", "INFO"]


def worker_commands(job: Job) -> list[list[str]]:
    pin = [job.taskset, "-c", ",".join(map(str, job.cpus))] if job.taskset and job.cpus else []
    return [worker_command(job.master_host, job.master_port, pin) for _ in range(job.workers)]


def _watch_stdin(stop: threading.Event) -> None:
    """EOF on stdin means the controller is gone or done: stop."""
    with contextlib.suppress(Exception):
        while sys.stdin.buffer.read(4096):
            pass
    stop.set()


def run_job(job: Job, stop: threading.Event) -> dict[str, Any]:
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=False)
    scenario_file = out / "scenario.json"
    scenario_file.write_text(json.dumps(job.scenario, indent=2) + "\n")
    env = dict(os.environ)
    env.update(job.env)
    env.update({"SCORING_LAB_SCENARIO": str(scenario_file),
                "SCORING_LAB_REQUEST_LOG": str(out / f"requests_{slug(job.host)}"),
                "PYTHONUNBUFFERED": "1"})
    params = GuardParams(**job.guard)
    procs: list[subprocess.Popen] = []
    logs = []
    started = time.time()
    stopped_by = "master"
    try:
        for i, cmd in enumerate(worker_commands(job), start=1):
            fh = (out / f"locust_worker{i}.log").open("wb")
            logs.append(fh)
            procs.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                          cwd=str(LOCUSTFILE.parents[2]),
                                          stdin=subprocess.DEVNULL, start_new_session=True))
        guard = CpuGuard([psutil.Process(p.pid) for p in procs], len(job.cpus) or 1, params)
        deadline = started + job.deadline_s
        while any(p.poll() is None for p in procs):
            if stop.is_set():
                stopped_by = "controller"
                break
            if time.time() >= deadline:
                stopped_by = "deadline"
                break
            stop.wait(params.interval_s)
            guard.sample()
    finally:
        for p in procs:
            kill_group(p, grace_s=QUIT_GRACE_S if stopped_by == "master" else 5.0)
        for fh in logs:
            fh.close()
    result = {
        "host": job.host, "workers": job.workers, "cpus": job.cpus,
        "started_at": started, "ended_at": time.time(), "stopped_by": stopped_by,
        "exit_codes": [p.returncode for p in procs],
        "guard": {"cores": guard.cores, "violation": guard.violation,
                  "max_total_percent": max((s["total_percent"] for s in guard.samples),
                                           default=0.0)},
    }
    (out / "guard.json").write_text(json.dumps({"cores": guard.cores,
                                                "samples": guard.samples}) + "\n")
    (out / "host_result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def write_tar(directory: Path, stream: io.BufferedIOBase) -> None:
    with tarfile.open(fileobj=stream, mode="w|") as archive:
        for path in sorted(directory.iterdir()):
            archive.add(path, arcname=path.name)


def main() -> int:
    line = sys.stdin.readline()
    try:
        job = Job.from_json(line)
    except (ValueError, KeyError, TypeError) as exc:
        print(f"worker_host: bad job line {line[:200]!r}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    threading.Thread(target=_watch_stdin, args=(stop,), daemon=True).start()
    try:
        run_job(job, stop)
    except FileExistsError:
        print(f"worker_host: {job.out_dir} exists already; not reusing it", file=sys.stderr)
        return 2
    write_tar(Path(job.out_dir), sys.stdout.buffer)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
