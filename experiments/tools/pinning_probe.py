"""Probe: does the sync stack's throughput follow which model worker holds each scoring
worker's keep-alive connection? (issue 13: default/sync measured 12 req/s in one run, 22 in
the next.)

Each trial restarts the sync model API and scoring handler (2 gunicorn+meinheld workers each,
as the default deploy runs them on one pinned core), drives the scoring endpoint with a
bounded closed loop (N clients, each waiting for its answer, for S seconds; loopback only),
and meanwhile samples the processes with the lab's resource sampler: the assignment comes
from hardware/sampler.py's connection records through experiments/analysis/pinning.py.

    python -m experiments.tools.pinning_probe --trials 8 --out /tmp/pinning.json
    python -m experiments.tools.pinning_probe --client-per-request   # no keep-alive pool

Everything runs on free loopback ports under a private run dir, and is stopped at the end.

Measured on the 2-core dev VM (2026-12-01, services on core 0, probe on core 1, 16 clients,
15 s): both connections on one model worker 10.6-10.8 req/s (2 of 38 natural trials, and 6
of 6 with --force-same); on two model workers 18.1-20.7 req/s (median 19.45, n=36); with
--client-per-request (new connection per call) 17.9-19.4 req/s (median 18.7, n=8).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

from experiments.analysis import pinning
from experiments.tools.procs import free_port, stop, wait_until
from hardware.cpus import parse_cpu_list
from hardware.sampler import Sampler

ROOT = Path(__file__).resolve().parents[2]
BODY = b"[1, 2, 3]"


def healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/api/v1/healthcheck")
        return conn.getresponse().status == 200
    except OSError:
        return False


class Lab:
    """A private Redis and the two sync services on free ports, labelled for the sampler."""

    def __init__(self, run_dir: Path, workers: int, env: dict[str, str], cpus: str) -> None:
        self.run_dir, self.workers, self.extra = run_dir, workers, env
        # As the deploy pins them (taskset execs the service, so every forked worker inherits
        # the CPU set); "" leaves them unpinned.
        self.pin = [shutil.which("taskset") or "taskset", "-c", cpus] if cpus else []
        self.redis_port, self.model_port, self.scoring_port = free_port(), free_port(), free_port()
        self.procs: dict[str, subprocess.Popen] = {}

    def _env(self, service: str, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCORING_LAB_")}
        env.update({
            "SCORING_LAB_SERVICE": service, "SCORING_LAB_RUN_DIR": str(self.run_dir),
            "SCORING_LAB_PORT": str(port), "SCORING_LAB_WORKERS": str(self.workers),
            "SCORING_LAB_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "SCORING_LAB_MODEL_URL": f"http://127.0.0.1:{self.model_port}",
            **self.extra})
        return env

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            raise SystemExit("error: redis-server not found on PATH")
        env = self._env("redis", self.redis_port)
        self.procs["redis"] = subprocess.Popen(
            [*self.pin, binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.run_dir)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        subprocess.run([sys.executable, "-m", "services", "seed", "--redis-url",
                        env["SCORING_LAB_REDIS_URL"], "--entities", "50", "--wait", "10"],
                       cwd=ROOT, env=env, check=True, capture_output=True)

    def start(self, role: str) -> None:
        port = self.model_port if role == "model" else self.scoring_port
        log = (self.run_dir / f"{role}.log").open("ab")
        self.procs[role] = subprocess.Popen(
            [*self.pin, sys.executable, "-m", "services", "serve", "--role", role, "--arch",
             "sync"],
            cwd=ROOT, env=self._env(f"{role}-sync", port), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: healthy(port), 60, f"{role}-sync on port {port}")

    def restart_services(self, roles: tuple[str, ...] = ("scoring", "model")) -> None:
        """Restart roles (a role not running yet is started): a restarted scoring handler
        opens new pools, a restarted model API accepts them with fresh workers."""
        for role in ("scoring", "model"):
            if role in self.procs and role in roles:
                stop(self.procs.pop(role), timeout=15)
        for role in ("model", "scoring"):
            if role not in self.procs:
                self.start(role)

    def close(self) -> None:
        for proc in self.procs.values():
            stop(proc, timeout=15)


def closed_loop(port: int, users: int, seconds: float) -> tuple[int, Counter[str]]:
    """(successes, failures by kind: HTTP status or exception name) of `users` clients each
    sending the next request when the last answered, over its own keep-alive connection, for
    `seconds`."""
    end = time.monotonic() + seconds
    oks = [0] * users
    errors: list[Counter[str]] = [Counter() for _ in range(users)]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        path = "/api/v1/ml/sync/predict"
        while time.monotonic() < end:
            try:
                conn.request("POST", path, BODY, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    oks[i] += 1
                else:
                    errors[i][str(resp.status)] += 1
            except (OSError, http.client.HTTPException) as exc:
                errors[i][type(exc).__name__] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 15)
    return sum(oks), sum(errors, Counter())


def trial(lab: Lab, users: int, seconds: float, warmup: float, warmup_users: int,
          restart: tuple[str, ...], force_same: bool = False) -> dict:
    lab.restart_services(restart)
    if force_same:
        # The intervention: every model worker but one is stopped while the scoring workers
        # open their pools, so the one left accepts every connection; then all run again.
        workers = sorted(psutil.Process(lab.procs["model"].pid).children(), key=lambda p: p.pid)
        for w in workers[1:]:
            w.suspend()
        try:
            closed_loop(lab.scoring_port, users, min(warmup, 1.0))
        finally:
            for w in workers[1:]:
                w.resume()
    sampler = Sampler(str(lab.run_dir))
    samples: list[dict] = []
    stop_sampling = threading.Event()

    def sample_loop() -> None:
        while not stop_sampling.wait(1.0):
            samples.append(sampler.sample())

    thread = threading.Thread(target=sample_loop, daemon=True)
    thread.start()
    # Opens the pools, not counted. With 1 user the scoring workers connect one at a time, to
    # idle model workers, as after the experiments' 1-user probe or a Locust ramp; with
    # `users` they connect at once, while the model workers are busy.
    closed_loop(lab.scoring_port, warmup_users, warmup)
    t0 = time.time()
    ok, failed = closed_loop(lab.scoring_port, users, seconds)
    t1 = time.time()
    stop_sampling.set()
    thread.join(5)
    summary = pinning.model_connections(samples, t0, t1)
    if summary is None:
        assignment = None
    elif summary["share"] < 0.8:  # connections churn (no keep-alive): no one assignment
        assignment = "varies"
    else:
        assignment = "same" if summary["model_workers_serving"] == 1 else "different"
    return {"rps": round(ok / (t1 - t0), 1), "ok": ok, "failed": sum(failed.values()),
            "failures": dict(failed), "assignment": assignment,
            "connections": summary, "sentence": pinning.sentence(summary)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.tools.pinning_probe",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--warmup-users", type=int, default=0,
                    help="clients during the warm-up (default: --users)")
    ap.add_argument("--restart", choices=("both", "scoring"), default="both",
                    help="what each trial restarts: both sync services, or only the scoring "
                    "handler (the model API keeps its workers, as in issue 13's wrk runs)")
    ap.add_argument("--force-same", action="store_true",
                    help="make one model worker accept every pooled connection (the others "
                    "are suspended while the pools open): the 'same' case on demand")
    ap.add_argument("--workers", type=int, default=2, help="per service (default deploy: 2)")
    ap.add_argument("--client-per-request", action="store_true",
                    help="the scoring handler opens a new connection per model call")
    ap.add_argument("--service-cpus", default="0",
                    help="CPU list for Redis and both services (default deploy: all on 0); "
                    "'' for unpinned")
    ap.add_argument("--client-cpus", default="1",
                    help="CPU list for this probe's load loop (default deploy's loadgen: 1)")
    ap.add_argument("--out", type=Path, help="write the trials as JSON here")
    args = ap.parse_args(argv)
    for name in ("trials", "users", "workers"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup_users < 0:
        ap.error(f"--warmup-users must be >= 0, got {args.warmup_users}")
    if not 0 < args.seconds <= 600 or not 0 <= args.warmup <= 60:
        ap.error(f"--seconds must be in (0, 600] and --warmup in [0, 60], got "
                 f"{args.seconds} and {args.warmup}")
    env = {"SCORING_LAB_CLIENT_PER_REQUEST": "true"} if args.client_per_request else {}
    if args.client_cpus:
        try:
            os.sched_setaffinity(0, parse_cpu_list(args.client_cpus))
        except (ValueError, OSError) as exc:
            ap.error(f"--client-cpus {args.client_cpus!r}: {exc}")
    if args.service_cpus:
        try:
            parse_cpu_list(args.service_cpus)
        except ValueError as exc:
            ap.error(f"--service-cpus {args.service_cpus!r}: {exc}")
    run_dir = Path(tempfile.mkdtemp(prefix="pinning-probe-"))
    lab = Lab(run_dir, args.workers, env, args.service_cpus)
    rows = []
    try:
        lab.start_redis()
        for i in range(1, args.trials + 1):
            row = {"trial": i, **trial(lab, args.users, args.seconds, args.warmup,
                                       args.warmup_users or args.users,
                                       ("scoring",) if args.restart == "scoring"
                                       else ("scoring", "model"), args.force_same)}
            rows.append(row)
            print(f"trial {i}: {row['rps']} req/s ({row['failed']} failed "
                  f"{row['failures'] or ''}), "
                  f"{row['assignment'] or 'no connections seen'}: {row['sentence']}; both on "
                  f"one model worker in {(row['connections'] or {}).get('one_model_worker_share')}"
                  " of the samples",
                  flush=True)
    finally:
        lab.close()
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["assignment"] or "none", []).append(r["rps"])
    medians = {k: statistics.median(v) for k, v in by.items()}
    print("median req/s per assignment: " + ", ".join(
        f"{k} {m} (n={len(by[k])})" for k, m in medians.items()))
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                        "trials": rows, "medians": medians}, indent=1))
    shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
