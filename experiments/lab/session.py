"""The life of one measured run on the deployed lab, shared by every experiment: a new result
folder, the deployed topology and verify step before anything is timed, the runner pinned to
the load generator's cores, Locust runs labelled for the resource sampler, host data collected
at the end, the headline and report written, the results index refreshed. An interrupted run
leaves its folder marked incomplete (RunFolder.recording)."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

from experiments.lab import collect as collect_step
from experiments.lab import topology as topology_mod
from experiments.lab.verify import verify
from experiments.load.arrivals import OpenModel
from experiments.load.remote import WorkerHost, master_bind_address
from experiments.load.run import LocustResult, run_locust
from experiments.protocol import GuardParams, Scenario
from experiments.results import RunFolder, new_run_folder
from experiments.results_index import update_index
from services.describe import predict_path


@dataclasses.dataclass(frozen=True)
class RunOptions:
    results_dir: Path
    inventory: str | None
    ansible_playbook: str
    # committed runs this one re-records (folder names in results_dir): the index marks them
    # superseded by it; their folders stay as they are
    supersedes: tuple[str, ...] = ()


class Progress:
    """One line per step and about every 10 s: step n of m, elapsed and remaining time."""

    def __init__(self, planned_total_s: float, steps: int) -> None:
        self.started = time.monotonic()
        self.planned_total_s = planned_total_s
        self.steps = steps
        self.done_s = 0.0
        self._last_print = 0.0

    def say(self, text: str) -> None:
        print(f"[{self._clock(time.monotonic() - self.started)}] {text}", file=sys.stderr,
              flush=True)

    @staticmethod
    def _clock(seconds: float) -> str:
        return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"

    def ticker(self, step: int, label: str) -> Callable[[float, float], None]:
        def tick(elapsed_s: float, planned_s: float) -> None:
            now = time.monotonic()
            if now - self._last_print < 10:
                return
            self._last_print = now
            remaining = max(0.0, self.planned_total_s - self.done_s - elapsed_s)
            self.say(f"step {step}/{self.steps} {label}: {elapsed_s:.0f}/{planned_s:.0f} s, "
                     f"about {self._clock(remaining)} of load left")
        return tick


@dataclasses.dataclass(frozen=True)
class LoadPlan:
    """Where Locust runs. One load generator that is the controller: Locust runs here, one
    process per core (a master and workers with several cores). Otherwise (several load
    generators, or a remote one) it runs distributed: the master on the controller (pinned to
    the controller's load-generator cores when it is one of them), one worker per core on
    every load-generator host."""

    local_host: str                  # this machine's name in the inventory ("" = not one)
    local_cpus: list[int]            # its load-generator cores
    local_run_dir: str
    worker_hosts: list[WorkerHost]   # empty: everything runs here

    @classmethod
    def from_topology(cls, topology: topology_mod.Topology) -> LoadPlan:
        local = [g for g in topology.loadgens if g.local]
        here = (local[0].host, local[0].cpus, local[0].entry.get("run_dir", "")) if local \
            else ("", [], "")
        if len(topology.loadgens) == 1 and local:
            return cls(*here, [])
        return cls(*here, [WorkerHost.from_topology(g.entry, g.local)
                           for g in topology.loadgens])

    @property
    def distributed(self) -> bool:
        return bool(self.worker_hosts)

    @property
    def local_workers(self) -> int:
        return 0 if self.distributed else locust_workers(self.local_cpus)

    def master_addresses(self) -> tuple[str, dict[str, str]] | None:
        """Before a run folder exists: every load generator has the deployed app and every
        remote one answers SSH (RemoteError says which host and why). Returns where the
        master binds and the address each host reaches it at, for every run of the session."""
        if not self.distributed:
            return None
        for host in self.worker_hosts:
            host.job_command()
        return master_bind_address(self.worker_hosts)

    def describe(self) -> dict[str, Any]:
        if not self.distributed:
            return {"mode": "local", "host": self.local_host, "cpus": self.local_cpus,
                    "locust_workers": self.local_workers}
        return {"mode": "distributed",
                "master": {"host": "controller", "cpus": self.local_cpus},
                "workers": [{"host": h.host, "cpus": h.cpus, "workers": h.workers,
                             "local": h.local} for h in self.worker_hosts],
                "locust_workers": sum(h.workers for h in self.worker_hosts)}


# Around every Locust run of a session: hook(session, out_dir, arch, url) (url: the target
# when not the scoring handler) gives a context entered before the run and left after it,
# for an experiment's own raw data beside the run's (experiment 7: the model's batch counters).
StepHook = Callable[["Session", Path, str, str | None], AbstractContextManager]


@dataclasses.dataclass
class Session:
    run: RunFolder
    topology: topology_mod.Topology
    load: LoadPlan
    master: tuple[str, dict[str, str]] | None  # bind address, address per worker host
    guard: GuardParams
    progress: Progress
    options: RunOptions | None = None  # how to redeploy (a restart: experiments/lab/renew.py)
    # Each build's idle latency as recovery waits learnt it (experiments/lab/recovery.py).
    idle_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    # The extra vars of the deployment in place ({} = the default build; exp4 sets a rung's).
    deploy_vars: dict[str, Any] = dataclasses.field(default_factory=dict)
    step_hooks: tuple[StepHook, ...] = ()

    def locust(self, scenario: Scenario, arch: str, out_dir: Path, *, arrival: str,
               payload, step: int, label: str, url: str | None = None,
               open_model: OpenModel | None = None, path: str | None = None,
               job: dict[str, Any] | None = None) -> LocustResult:
        """One Locust run from the load generator, pinned to its cores and labelled
        ``loadgen`` for the resource sampler (open model: `open_model`'s schedule for the
        scenario's duration_s), inside every step hook's context. `path`: the endpoint
        (default: the architecture's predict path); `job`: job clients (run_locust's)."""
        with ExitStack() as hooks:
            for hook in self.step_hooks:
                hooks.enter_context(hook(self, out_dir, arch, url))
            result = self._run_locust(scenario, arch, out_dir, arrival=arrival,
                                      payload=payload, step=step, label=label, url=url,
                                      open_model=open_model, path=path, job=job)
        self.progress.done_s += scenario.total_s
        if not result.valid:
            self.progress.say(f"WARNING {label} is invalid: {'; '.join(result.reasons)}")
        return result

    def _run_locust(self, scenario: Scenario, arch: str, out_dir: Path, *, arrival: str,
                    payload, step: int, label: str, url: str | None,
                    open_model: OpenModel | None, path: str | None = None,
                    job: dict[str, Any] | None = None) -> LocustResult:
        return run_locust(
            scenario, url or self.topology.scoring_url(arch), path or predict_path(arch),
            out_dir, arrival=arrival, cpus=self.load.local_cpus or None, guard=self.guard,
            payload=payload, arch=arch, progress=self.progress.ticker(step, label),
            workers=self.load.local_workers, worker_hosts=self.load.worker_hosts,
            master_addresses=self.master,
            extra_env={"SCORING_LAB_SERVICE": "loadgen",
                       "SCORING_LAB_RUN_DIR": self.load.local_run_dir},
            open_model=open_model, job=job,
        )


def locust_workers(cpus: list[int]) -> int:
    """Locust uses one core per process: with several load-generator cores it runs as a master
    and one worker per core (0 = a single process)."""
    return len(cpus) if len(cpus) > 1 else 0


@contextmanager
def session(experiment: str, options: RunOptions, *, planned_s: float, steps: int,
            guard: GuardParams, finish: Callable[[Path], Any],
            **manifest: Any) -> Iterator[Session]:
    """Open a run on the deployed lab; on a normal exit collect host data, then
    ``finish(folder)``: the experiment's analysis, completion with its headline and report
    (experiments/experiment.py)."""
    topology = topology_mod.load()
    load = LoadPlan.from_topology(topology)
    master = load.master_addresses()
    run = new_run_folder(options.results_dir, experiment, topology.label)
    print(f"result folder: {run.path}", file=sys.stderr, flush=True)
    try:
        with run.recording():
            run.update(inventory=options.inventory, topology=topology.raw,
                       loadgen=load.describe(),
                       **({"supersedes": list(options.supersedes)} if options.supersedes
                          else {}),
                       **manifest)
            # The runner samples Locust's CPU and waits on it: keep it off the services' cores.
            if load.local_cpus:
                os.sched_setaffinity(0, load.local_cpus)
            progress = Progress(planned_s, steps)
            progress.say(f"verifying the lab ({len(topology.hosts)} host(s))")
            run.update(verify=[dataclasses.asdict(c) for c in verify(topology)])
            window_start = time.time()
            if load.distributed:
                progress.say("Locust runs distributed: master here, workers on "
                             + ", ".join(f"{h.host} ({h.workers})" for h in load.worker_hosts))
            yield Session(run, topology, load, master, guard, progress, options)
            window_end = time.time()
            progress.say("collecting hardware reports and resource samples from every host")
            stored = collect_step.collect(run, options.inventory, options.ansible_playbook,
                                          window_start, window_end)
            run.update(collected=stored)
            if not stored["resources"]:
                run.warn("no resource samples were collected: is the monitor role deployed?")
            finish(run.path)
    finally:
        update_index(options.results_dir)
