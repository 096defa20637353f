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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from experiments import collect as collect_step
from experiments import topology as topology_mod
from experiments.load.run import LocustResult, run_locust
from experiments.protocol import GuardParams, Scenario
from experiments.results import RunFolder, new_run_folder, open_run_folder, update_index
from experiments.verify import verify


@dataclasses.dataclass(frozen=True)
class RunOptions:
    results_dir: Path
    inventory: str | None
    ansible_playbook: str


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


@dataclasses.dataclass
class Session:
    run: RunFolder
    topology: topology_mod.Topology
    loadgen: topology_mod.LoadGenerator
    guard: GuardParams
    progress: Progress

    def locust(self, scenario: Scenario, arch: str, out_dir: Path, *, arrival: str,
               payload, step: int, label: str, url: str | None = None) -> LocustResult:
        """One Locust run from the load generator, pinned to its cores and labelled
        ``loadgen`` for the resource sampler."""
        result = run_locust(
            scenario, url or self.topology.scoring_url(arch), f"/api/v1/ml/{arch}/predict",
            out_dir, arrival=arrival, cpus=self.loadgen.cpus, guard=self.guard,
            payload=payload, arch=arch, progress=self.progress.ticker(step, label),
            workers=self.locust_workers,
            extra_env={"SCORING_LAB_SERVICE": "loadgen",
                       "SCORING_LAB_RUN_DIR": self.loadgen_run_dir},
        )
        self.progress.done_s += scenario.total_s
        if not result.valid:
            self.progress.say(f"WARNING {label} is invalid: {'; '.join(result.reasons)}")
        return result

    @property
    def locust_workers(self) -> int:
        return locust_workers(self.loadgen.cpus)

    @property
    def loadgen_run_dir(self) -> str:
        for entry in self.topology.raw.get("loadgen") or []:
            if entry.get("host") == self.loadgen.host and entry.get("run_dir"):
                return entry["run_dir"]
        return ""


def completing(build_headline: Callable[[Path], dict[str, Any]],
               write_report: Callable[[Path], dict[str, Any]]) -> Callable[[Path], dict]:
    """A session's ``finish``: mark the run complete with its headline, then write the report
    (in that order, so the report shows the final status; a failed report can be rebuilt)."""
    def finish(folder: Path) -> dict[str, Any]:
        open_run_folder(folder).complete(build_headline(folder))
        return write_report(folder)
    return finish


def locust_workers(cpus: list[int]) -> int:
    """Locust uses one core per process: with several load-generator cores it runs as a master
    and one worker per core (0 = a single process)."""
    return len(cpus) if len(cpus) > 1 else 0


def _local_loadgen(topology: topology_mod.Topology) -> topology_mod.LoadGenerator:
    loadgen = topology.loadgens[0]
    if not loadgen.local:
        raise topology_mod.TopologyError(
            f"the load generator {loadgen.host!r} is a remote host; this version runs Locust on "
            "the controller: put the controller (localhost, ansible_connection=local) in the "
            "loadgen group of the inventory")
    return loadgen


@contextmanager
def session(experiment: str, options: RunOptions, *, planned_s: float, steps: int,
            guard: GuardParams, finish: Callable[[Path], dict[str, Any]],
            **manifest: Any) -> Iterator[Session]:
    """Open a run on the deployed lab; on a normal exit collect host data, mark the run
    complete with ``finish(folder)``'s headline (finish also writes the report)."""
    topology = topology_mod.load()
    loadgen = _local_loadgen(topology)
    run = new_run_folder(options.results_dir, experiment, topology.label)
    print(f"result folder: {run.path}", file=sys.stderr, flush=True)
    try:
        with run.recording():
            run.update(inventory=options.inventory, topology=topology.raw,
                       loadgen={"host": loadgen.host, "cpus": loadgen.cpus,
                                "locust_workers": locust_workers(loadgen.cpus)},
                       **manifest)
            # The runner samples Locust's CPU and waits on it: keep it off the services' cores.
            if loadgen.cpus:
                os.sched_setaffinity(0, loadgen.cpus)
            progress = Progress(planned_s, steps)
            progress.say(f"verifying the lab ({len(topology.hosts)} host(s))")
            run.update(verify=[dataclasses.asdict(c) for c in verify(topology)])
            window_start = time.time()
            yield Session(run, topology, loadgen, guard, progress)
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
