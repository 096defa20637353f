"""Experiment 8's run: per architecture, on the deployed lab (its default build, with the queue
workers the deploy starts), the levels and the burst, each an open-model Locust run of its own
folder under raw/locust/ (the report reads them back):

    levels/<arch>/idle/recovery.json          the in-line idle latency, learnt first
    levels/<arch>/NN_<factor>x/queue/         job clients at factor x capacity (jobs_*.csv);
                                              wait.json: the wait for an empty queue before it;
                                              worker_times.csv: the queue's own record of each
                                              job (experiments/lab/job_times.py)
    levels/<arch>/NN_<factor>x/wait/          with client.wait_s: the same schedule as long
                                              polls (?wait=), as queue/ otherwise
    levels/<arch>/NN_<factor>x/inline/        the same schedule to the predict endpoint;
                                              recovery.json: the wait for idle latency before it
    burst/<arch>/queue/                       the base load's job clients; trigger.json: when
                                              the burst ran; burst/: the burst's own stream
    burst/<arch>/inline/                      the same to the predict endpoint
    burst/<arch>/after/recovery.json          the wait for idle latency after it

and raw/queue_depth.csv: every queue's depth, sampled from Redis throughout
(experiments/lab/queue_depth.py).

    config = load_queue("experiments/exp8_queue/config.toml", "quick")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.exp8_queue.config import QueueConfig
from experiments.lab.burst import Burst
from experiments.lab.faults import FaultWindow, sigterm_as_interrupt
from experiments.lab.job_times import collect_job_times
from experiments.lab.queue_depth import DepthSampler, waiting_keys
from experiments.lab.recovery import Probe, Waiter
from experiments.lab.renew import restart_stuck
from experiments.lab.session import RunOptions, Session, session
from experiments.load.arrivals import OpenModel
from experiments.load.run import LocustResult
from experiments.protocol import Scenario
from experiments.results import write_json_atomic
from services import jobs
from services.describe import predict_path
from services.settings import Arch

DEPTH_FILE, TRIGGER_FILE, WAIT_FILE = "queue_depth.csv", "trigger.json", "wait.json"
# The burst's own stream draws from another seed than the base load's.
BURST_SEED_OFFSET = 1000
QUEUE, WAIT, INLINE = "queue", "wait", "inline"
JOB_KINDS = (QUEUE, WAIT)


def open_model(cfg: QueueConfig, rate: float, kind: str, *, seed_offset: int = 0,
               drain_s: float | None = None) -> OpenModel:
    """The schedule of a step: the shared open-model keys; job clients keep many jobs going
    at once (client.inflight_cap) and poll on for client.drain_s after the schedule."""
    p, c = cfg.capacity, cfg.client
    job = kind in JOB_KINDS
    return OpenModel(rate=rate, process=p.process, seed=p.seed + seed_offset,
                     inflight_cap=c.inflight_cap if job else p.inflight_cap,
                     request_timeout_s=p.request_timeout_s,
                     drain_s=drain_s if drain_s is not None else (c.drain_s if job
                                                                  else p.drain_s),
                     nominal_count=p.nominal_count)


class Measure:
    """One architecture's measurements on the deployed lab."""

    def __init__(self, lab: Session, cfg: QueueConfig, arch: str, step: int,
                 depth: DepthSampler) -> None:
        self.lab, self.cfg, self.arch, self.step, self.depth = lab, cfg, arch, step, depth
        self.capacity = cfg.capacity_rps[arch]
        self.jobs_path = jobs.jobs_path(Arch(arch))
        probe = Probe(lab.topology.scoring_url(arch) + predict_path(arch), list(cfg.payload),
                      timeout_s=cfg.capacity.request_timeout_s)
        self.waiter = Waiter(probe, cfg.levels.recover_max_s, cfg.levels.recover_tolerance,
                             restart=lambda why: restart_stuck(lab, why),
                             max_idle_ms=cfg.bound_ms)

    def _load(self, out: Path, kind: str, model: OpenModel, duration_s: float,
              what: str) -> LocustResult:
        scenario = Scenario(name=what.split()[0], kind="open", rate=model.rate,
                            duration_s=duration_s)
        label = f"{self.arch} {kind} {what}"
        self.lab.progress.say(f"{label}: {model.rate:.1f}/s for {duration_s:g} s")
        job = (self.cfg.client.spec(wait=kind == WAIT).to_dict() if kind in JOB_KINDS
               else None)
        return self.lab.locust(scenario, self.arch, out, arrival="open",
                               payload=list(self.cfg.payload), step=self.step, label=label,
                               open_model=model, path=self.jobs_path if job else None,
                               job=job)

    def _job_times(self, *dirs: Path) -> None:
        """The queue's own records of the step's jobs, read while its answers are kept."""
        for d in dirs:
            record = collect_job_times(self.lab.topology.url("redis"), self.arch, d)
            if record.get("error") or record["found"] < record["jobs"]:
                self.lab.run.warn(f"{self.arch}: the queue had records of {record['found']} "
                                  f"of {record['jobs']} jobs of "
                                  f"{d.relative_to(self.lab.run.path)} "
                                  f"{record.get('error', '')}".rstrip())

    def _ready(self, out: Path, kind: str, max_s: float) -> None:
        """Before a step: an empty queue (job steps) or the idle latency (in-line ones)."""
        if kind in JOB_KINDS:
            record = self.depth.wait_empty(self.arch, max_s)
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / WAIT_FILE, record)
            if not record["empty"]:
                self.lab.run.warn(f"{self.arch}: the queue was not empty after "
                                  f"{record['waited_s']:.0f} s ({record}) before "
                                  f"{out.relative_to(self.lab.run.path)}")
            return
        self.waiter.max_wait_s = max_s
        record = self.waiter.wait(out)
        if not record["recovered"]:
            self.lab.run.warn(f"{self.arch}: not back to idle latency after "
                              f"{record['waited_s']:.0f} s "
                              f"({out.relative_to(self.lab.run.path)})")

    def levels(self) -> None:
        lv, root = self.cfg.levels, self.lab.run.raw / "locust" / "levels" / self.arch
        self._ready(root / "idle", INLINE, lv.recover_max_s)  # learns the idle latency
        kinds = (QUEUE, INLINE) if self.cfg.client.wait_s is None else (QUEUE, WAIT, INLINE)
        for i, factor in enumerate(lv.factors):
            rate = factor * self.capacity
            for kind in kinds:
                out = root / f"{i:02d}_{factor:g}x" / kind
                job = kind in JOB_KINDS
                self._ready(out, kind, lv.drain_max_s if job else lv.recover_max_s)
                self._load(out, kind, open_model(self.cfg, rate, kind), lv.step_s,
                           f"level {factor:g}x")
                if job:
                    self._job_times(out)

    def burst(self) -> None:
        b, lv = self.cfg.burst, self.cfg.levels
        root = self.lab.run.raw / "locust" / "burst" / self.arch
        for kind in (QUEUE, INLINE):
            out = root / kind
            self._ready(out, kind, lv.drain_max_s if kind == QUEUE else lv.recover_max_s)
            base = open_model(self.cfg, b.base * self.capacity, kind)
            # the burst's clients poll their jobs until the base load's run ends with them
            extra = open_model(self.cfg, (b.factor - b.base) * self.capacity, kind,
                               seed_offset=BURST_SEED_OFFSET,
                               drain_s=b.after_s + base.drain)
            job = (self.cfg.client.spec(wait=kind == WAIT).to_dict() if kind in JOB_KINDS
               else None)
            trigger = Burst(self.lab, self.arch, out / "burst", extra, b.burst_s,
                            tuple(self.cfg.payload), path=self.jobs_path if job else None,
                            job=job)
            # launched before_s after the base load: both streams take the same Locust
            # start-up, so the burst lands about before_s into the base schedule
            window = FaultWindow(trigger, b.before_s, b.burst_s)
            try:
                with window:
                    self._load(out, kind, base, b.run_s, f"burst {b.factor:g}x")
            finally:
                write_json_atomic(out / TRIGGER_FILE, window.record)
            if kind == QUEUE:
                self._job_times(out, out / "burst")
            for key in ("error", "stop_error"):
                if key in window.record:
                    self.lab.run.warn(f"{self.arch} {kind} burst: {window.record[key]}")
        # the in-line burst leaves a backlog: the next architecture starts on an idle stack
        self._ready(root / "after", INLINE, lv.recover_max_s)


def run_queue(cfg: QueueConfig, options: RunOptions, finish: Callable[[Path], Any]) -> Path:
    """Measure each architecture's levels and burst on the deployed lab with the queue's
    depth sampled throughout; collect; `finish`. Returns the result folder."""
    with session(cfg.experiment, options, planned_s=cfg.total_s,
                 steps=len(cfg.architectures), guard=cfg.guard, finish=finish,
                 profile=cfg.profile, protocol=cfg.to_dict(), arrival="open") as lab:
        run = lab.run
        missing = [a for a in cfg.architectures if f"queue-{a}" not in lab.topology.services]
        if missing:
            raise RuntimeError(f"the deployed lab runs no queue workers for {missing} "
                               "(topology services queue-<arch>): deploy with the "
                               "queue_worker role")
        sampler = DepthSampler(lab.topology.url("redis"), waiting_keys(cfg.architectures),
                               run.raw / DEPTH_FILE, cfg.depth.interval_s)
        windows: dict[str, dict[str, float]] = {}
        idle_ms: dict[str, float | None] = {}
        try:
            with sigterm_as_interrupt(), sampler:
                for step, arch in enumerate(cfg.architectures, 1):
                    m = Measure(lab, cfg, arch, step, sampler)
                    windows[arch] = {"start": time.time()}
                    m.levels()
                    m.burst()
                    windows[arch]["end"] = time.time()
                    idle_ms[arch] = m.waiter.idle_ms
                    run.update(windows=windows, idle_ms=idle_ms)
        finally:
            run.update(queue_depth=sampler.record())
            if sampler.errors:
                run.warn(f"queue depth: Redis did not answer every sample "
                         f"({sampler.errors[0]})")
    return run.path
