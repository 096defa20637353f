"""Run one Locust scenario as a subprocess, bounded in time, with a load-generator CPU guard.

Plain Python (no locust import). `run_locust` writes everything into `out_dir`:

    scenario.json            stages, path, arrival, pacing, payload (read by the locustfile)
    locust_stats.csv, locust_stats_history.csv, locust_failures.csv, locust_exceptions.csv
    report.html              Locust's HTML report
    requests_<pid>.csv       every request with exact timing (one file per Locust process)
    jobs_<pid>.csv           job clients only: every job, submit to result (job_log.py)
    locust.log               Locust's output (locust_worker<i>.log with local workers)
    hosts/<host>/            distributed over load-generator hosts: each host's worker logs,
                             guard.json and host_result.json (experiments.load.remote); its
                             requests_<host>_<pid>.csv files are moved up beside the others
    guard.json               the CPU guard's samples
    result.json              LocustResult.to_dict()

The guard: Locust's own CPU warning samples every 10 s and its first reading is 0, so it
never fires in short runs. Here the Locust process tree's CPU is computed from psutil
cpu_times deltas about every second (a new process is measured from its creation, never 0).
The run is invalid when, after a start-up grace period and for at least `sustain_s`, either
the tree uses more than threshold x the cores it may run on, or one Locust process (single
threaded under gevent) uses more than threshold x one core; or when Locust logs its own
CPU warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from experiments.constants import REPO_ROOT
from experiments.load.arrivals import OpenModel
from experiments.load.procs import CpuGuard, kill_group
from experiments.load.remote import HostRun, WorkerHost, master_bind_address
from experiments.load.stages import duration_of, stages_for, write_scenario_file
from experiments.load.worker_host import LOCUSTFILE, QUIT_GRACE_S, Job, worker_command
from experiments.protocol import GuardParams, Scenario
from hardware.cpus import parse_cpu_list

CSV_PREFIX = "locust"
LOCUST_CPU_WARNINGS = (
    "CPU usage above",
    "CPU usage was too high",
    "CPU usage threshold was exceeded",
)
DEFAULT_PAYLOAD = (5.1, 3.5, 1.4, 0.2)


@dataclass
class LocustResult:
    """What one Locust run produced. Paths are absolute here; to_dict() stores them relative
    to out_dir so a result folder can move."""

    scenario: str
    arch: str | None
    out_dir: Path
    host_url: str
    path: str
    arrival: str
    workers: int
    cpus: list[int] | None
    command: list[str]
    planned_s: float
    started_at: float = 0.0
    ended_at: float = 0.0
    exit_code: int | None = None
    timed_out: bool = False
    stats_csv: Path | None = None
    history_csv: Path | None = None
    failures_csv: Path | None = None
    exceptions_csv: Path | None = None
    html: Path | None = None
    request_csvs: list[Path] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    scenario_file: Path | None = None
    guard_file: Path | None = None
    guard_cores: int = 1
    guard_samples: list[dict[str, Any]] = field(default_factory=list)
    n_requests: int = 0
    hosts: list[dict[str, Any]] = field(default_factory=list)
    # open-model runs: the streams' counts summed (experiments.load.locustfile)
    open_model: dict[str, Any] | None = None
    valid: bool = True
    reasons: list[str] = field(default_factory=list)

    def invalidate(self, reason: str) -> None:
        self.valid = False
        if reason not in self.reasons:
            self.reasons.append(reason)

    @property
    def guard_max_percent(self) -> float:
        return max((s["total_percent"] for s in self.guard_samples), default=0.0)

    def to_dict(self, *, samples: bool = False) -> dict[str, Any]:
        def rel(p: Path | None) -> str | None:
            return None if p is None else os.path.relpath(p, self.out_dir)

        d = {
            "scenario": self.scenario,
            "arch": self.arch,
            "host_url": self.host_url,
            "path": self.path,
            "arrival": self.arrival,
            "workers": self.workers,
            "cpus": self.cpus,
            "command": self.command,
            "planned_s": self.planned_s,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "files": {
                "stats": rel(self.stats_csv),
                "history": rel(self.history_csv),
                "failures": rel(self.failures_csv),
                "exceptions": rel(self.exceptions_csv),
                "html": rel(self.html),
                "requests": [rel(p) for p in self.request_csvs],
                "logs": [rel(p) for p in self.logs],
                "scenario": rel(self.scenario_file),
                "guard": rel(self.guard_file),
            },
            "n_requests": self.n_requests,
            "open_model": self.open_model,
            "hosts": self.hosts,
            "guard": {
                "cores": self.guard_cores,
                "n_samples": len(self.guard_samples),
                "max_total_percent": round(self.guard_max_percent, 1),
            },
            "valid": self.valid,
            "reasons": list(self.reasons),
        }
        if samples:
            d["guard"]["samples"] = self.guard_samples
        return d


def _free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _count_rows(path: Path) -> int:
    with path.open() as f:
        return max(0, sum(1 for _ in f) - 1)


def run_locust(
    scenario: Scenario,
    host_url: str,
    path: str,
    out_dir: str | Path,
    *,
    arrival: str = "spread",
    cpus: Iterable[int] | str | None = None,
    workers: int = 0,
    worker_hosts: list[WorkerHost] | None = None,
    master_addresses: tuple[str, dict[str, str]] | None = None,
    timeout_margin_s: float = 30.0,
    guard: GuardParams | None = None,
    payload: Iterable[float] = DEFAULT_PAYLOAD,
    arch: str | None = None,
    seed: int | None = None,
    progress: Callable[[float, float], None] | None = None,
    extra_env: dict[str, str] | None = None,
    open_model: OpenModel | None = None,
    job: dict[str, Any] | None = None,
) -> LocustResult:
    """Run `scenario` against host_url + path with Locust (headless, CSV + full history +
    HTML), killed after the planned duration + timeout_margin_s. Three shapes:

    - one process (workers=0, no worker_hosts), pinned to `cpus` with taskset when given;
    - a master with `workers` local workers, all pinned to `cpus`;
    - distributed: a master here (pinned to `cpus` when given) and, on every host of
      `worker_hosts`, one worker per CPU of that host, started by experiments.load.remote;
      `master_addresses` (from master_bind_address, found once per session) saves asking
      every host over SSH again.

    Returns a LocustResult (also written to out_dir/result.json). `progress(elapsed_s,
    planned_s)` is called about once a second. `job` (open model only; the fields of
    experiments/load/job_log.py ``JobSpec``): each arrival submits a job to `path` and
    polls it, written to jobs_<pid>.csv beside the request logs."""
    guard = guard or GuardParams()
    if job is not None and open_model is None:
        raise ValueError(f"scenario {scenario.name!r}: job clients run only in an open model")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cpu_list = None if cpus is None else parse_cpu_list(cpus)
    hosts = list(worker_hosts or [])
    if hosts:
        workers = sum(h.workers for h in hosts)
    open_doc = None
    if open_model is not None:
        streams = max(workers, 1)
        open_doc = {**open_model.to_dict(), "streams": streams, "schedule_s": scenario.duration_s}
        scenario = scenario.model_copy(update={
            "kind": "constant", "users": streams, "spawn_rate": float(streams),
            "duration_s": scenario.duration_s + open_model.drain,
        })
    planned = duration_of(stages_for(scenario))
    scenario_file = write_scenario_file(
        out_dir / "scenario.json",
        scenario,
        path_url=path,
        arrival=arrival,
        payload=list(payload),
        seed=seed,
        open_model=open_doc,
        job=job,
    )
    prefix = out_dir / CSV_PREFIX
    html = out_dir / "report.html"
    env = dict(os.environ)
    env.update(
        {
            "SCORING_LAB_SCENARIO": str(scenario_file),
            "SCORING_LAB_REQUEST_LOG": str(out_dir / "requests"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra_env or {})
    pin = ["taskset", "-c", ",".join(map(str, cpu_list))] if cpu_list else []
    base = [*pin, sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
    common = ["--headless", "--only-summary", "--loglevel", "INFO"]
    master_cmd = [
        *base,
        *common,
        "--host",
        host_url,
        "--csv",
        str(prefix),
        "--csv-full-history",
        "--html",
        str(html),
    ]
    worker_cmds: list[list[str]] = []
    wait_workers_s = 0.0
    reach: dict[str, str] = {}
    if hosts:
        bind, reach = master_addresses or master_bind_address(hosts)
    else:
        bind = "127.0.0.1"
    if workers > 0:
        port = _free_port(bind)
        wait_workers_s = 30.0
        master_cmd += [
            "--master",
            "--master-bind-host",
            bind,
            "--master-bind-port",
            str(port),
            "--expect-workers",
            str(workers),
            "--expect-workers-max-wait",
            str(int(wait_workers_s)),
        ]
    if workers > 0 and not hosts:
        worker_cmds = [worker_command("127.0.0.1", port, pin) for _ in range(workers)]

    # The guard here watches the local processes: all of them, or the master alone when the
    # workers run on worker hosts (each host guards its own with the same rule).
    cores = len(cpu_list) if cpu_list else (1 if hosts else len(os.sched_getaffinity(0)))
    result = LocustResult(
        scenario=scenario.name,
        arch=arch,
        out_dir=out_dir,
        host_url=host_url,
        path=path,
        arrival=arrival,
        workers=workers,
        cpus=cpu_list,
        command=master_cmd,
        planned_s=planned,
        scenario_file=scenario_file,
        guard_cores=cores,
    )
    procs: list[subprocess.Popen] = []
    host_runs: list[HostRun] = []
    log_files = []
    deadline_s = planned + wait_workers_s + timeout_margin_s
    try:
        result.started_at = time.time()
        for i, cmd in enumerate([master_cmd, *worker_cmds]):
            log = out_dir / ("locust.log" if i == 0 else f"locust_worker{i}.log")
            result.logs.append(log)
            fh = log.open("wb")
            log_files.append(fh)
            procs.append(
                subprocess.Popen(
                    cmd,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=str(REPO_ROOT),
                    start_new_session=True,
                )
            )
        master = procs[0]
        for h in hosts:
            # Never reused on the host: a time stamp, what runs, and the master's port.
            job_name = (f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(result.started_at))}-"
                        f"{scenario.name}-{arch or 'any'}-{port}")
            host_env = {**(extra_env or {}), "SCORING_LAB_RUN_DIR": h.run_dir}
            job = Job(host=h.host, out_dir=h.job_dir(job_name), master_host=reach[h.host],
                      master_port=port, workers=h.workers, cpus=h.cpus, taskset=h.taskset,
                      scenario=json.loads(scenario_file.read_text()),
                      guard=guard.model_dump(), deadline_s=deadline_s + QUIT_GRACE_S,
                      env=host_env)
            host_runs.append(HostRun(h, job, out_dir))
        cpu_guard = CpuGuard([psutil.Process(p.pid) for p in procs], cores, guard)
        deadline = result.started_at + deadline_s
        next_t = time.time() + guard.interval_s
        while master.poll() is None:
            now = time.time()
            if now >= deadline:
                result.timed_out = True
                result.invalidate(
                    f"timed out after {now - result.started_at:.0f} s "
                    f"(planned {planned:.0f} s + margin {timeout_margin_s:.0f} s)"
                )
                break
            time.sleep(max(0.0, min(next_t, deadline) - now))
            if master.poll() is not None:
                break
            cpu_guard.sample()
            next_t += guard.interval_s
            if progress:
                progress(time.time() - result.started_at, planned)
        for p in procs:  # workers quit with their master; bound that too
            if p is not master:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=10)
        for hr in host_runs:  # each host ends its workers and sends its files
            hr.wait(timeout_s=QUIT_GRACE_S + 30)
    finally:
        for p in procs:
            kill_group(p)
        for hr in host_runs:
            hr.close()
        for fh in log_files:
            fh.close()
        result.ended_at = time.time()
    result.exit_code = procs[0].returncode if procs else None
    result.guard_samples = cpu_guard.samples if procs else []
    if procs and cpu_guard.violation:
        result.invalidate(cpu_guard.violation)
    for hr in host_runs:
        record = hr.unpack(out_dir)
        result.hosts.append(record)
        result.logs.extend(hr.logs())
        if record.get("failed"):
            result.invalidate(record["failed"])
        elif record["guard"]["violation"]:
            result.invalidate(f"on {hr.host.host}: {record['guard']['violation']}")
    _collect_outputs(result, prefix, html)
    _write_result(result)
    return result


def _collect_outputs(result: LocustResult, prefix: Path, html: Path) -> None:
    for attr, suffix in (
        ("stats_csv", "_stats.csv"),
        ("history_csv", "_stats_history.csv"),
        ("failures_csv", "_failures.csv"),
        ("exceptions_csv", "_exceptions.csv"),
    ):
        p = Path(f"{prefix}{suffix}")
        if p.exists():
            setattr(result, attr, p)
        else:
            result.invalidate(f"Locust wrote no {p.name}")
    result.html = html if html.exists() else None
    result.request_csvs = sorted(result.out_dir.glob("requests_*.csv"))
    result.n_requests = sum(_count_rows(p) for p in result.request_csvs)
    result.open_model = _open_model_counts(result)
    if result.n_requests == 0:
        result.invalidate("no request was recorded")
    if result.exit_code not in (0, 1):  # 1: the run had failed requests (a result, not an error)
        result.invalidate(f"Locust exited with code {result.exit_code}")
    for log in result.logs:
        if log.exists():
            text = log.read_text(errors="replace")
            for pattern in LOCUST_CPU_WARNINGS:
                if pattern in text:
                    result.invalidate(
                        f"Locust reported its own CPU warning ({pattern!r} in {log.name})"
                    )


def _open_model_counts(result: LocustResult) -> dict[str, Any] | None:
    """The open-model streams' own counts, summed; None for a closed-loop run. A run whose
    schedule was not sent in full by the generator says so here (achieved vs scheduled)."""
    scenario = json.loads(result.scenario_file.read_text()) if result.scenario_file else {}
    spec = scenario.get("open_model")
    if not spec:
        return None
    files = sorted(result.out_dir.rglob("open_model_*.json"))
    parts = [json.loads(p.read_text()) for p in files]
    summed = {k: sum(p.get(k, 0) for p in parts)
              for k in ("scheduled", "sent", "sent_in_schedule", "inflight_cap_hits", "unfinished",
                        "retried_closed")}
    schedule_s = float(spec["schedule_s"])
    counts = {
        **spec,
        **summed,
        "streams_reported": len(parts),
        "max_late_ms": max((p.get("max_late_ms", 0.0) for p in parts), default=0.0),
        # sends within the schedule's window: late sends after it do not make up the rate
        "achieved_rate": summed["sent_in_schedule"] / schedule_s if schedule_s else 0.0,
    }
    if len(parts) < int(spec["streams"]):
        result.invalidate(f"only {len(parts)} of {spec['streams']} open-model streams reported")
    return counts


def _write_result(result: LocustResult) -> None:
    result.guard_file = result.out_dir / "guard.json"
    result.guard_file.write_text(
        json.dumps(
            {
                "cores": result.guard_cores,
                "params_note": "percent of one core; total over the tree",
                "samples": result.guard_samples,
            }
        )
        + "\n"
    )
    tmp = result.out_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    os.replace(tmp, result.out_dir / "result.json")


def load_result(out_dir: str | Path) -> dict[str, Any]:
    """result.json of a Locust run directory, with file entries as absolute paths."""
    out_dir = Path(out_dir)
    d = json.loads((out_dir / "result.json").read_text())
    files = d.get("files", {})
    for k, v in list(files.items()):
        if isinstance(v, list):
            files[k] = [str(out_dir / x) for x in v]
        elif v is not None:
            files[k] = str(out_dir / v)
    return d


__all__ = ["LocustResult", "CpuGuard", "run_locust", "load_result"]
