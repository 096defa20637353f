"""Experiment 3, end to end on a deployed lab: verify, run every scenario on both
architectures (interleaved, same load), detect breaking points, collect host data, analyse,
report. Data flows one way: measure -> collect -> analyse -> report, and analysis reads only
the result folder, so a committed run can be re-reported anywhere."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

from experiments import collect as collect_step
from experiments import topology as topology_mod
from experiments.analysis.breaking_point import breaking_point_from_dir, users_to_hold
from experiments.load.run import run_locust
from experiments.protocol import Protocol, Scenario
from experiments.report import build_headline, write_report
from experiments.results import RunFolder, new_run_folder, scenario_entry, update_index
from experiments.verify import verify

EXPERIMENT = "experiment-3"


@dataclasses.dataclass(frozen=True)
class RunOptions:
    protocol: Protocol
    results_dir: Path
    inventory: str | None
    ansible_playbook: str
    arrival: str


class Progress:
    """One line per step and about every 10 s: scenario n of m, elapsed and remaining time."""

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

    def ticker(self, step: int, label: str):
        def tick(elapsed_s: float, planned_s: float) -> None:
            now = time.monotonic()
            if now - self._last_print < 10:
                return
            self._last_print = now
            remaining = max(0.0, self.planned_total_s - self.done_s - elapsed_s)
            self.say(f"scenario {step}/{self.steps} {label}: {elapsed_s:.0f}/{planned_s:.0f} s, "
                     f"about {self._clock(remaining)} of load left")
        return tick


def _pin_to_load_generator(cpus: list[int]) -> None:
    # The runner samples Locust's CPU and waits on it: keep it off the services' cores too.
    if cpus:
        os.sched_setaffinity(0, cpus)


def run_experiment3(options: RunOptions) -> Path:
    protocol = options.protocol
    topology = topology_mod.load()
    loadgen = topology.loadgens[0]
    if not loadgen.local:
        raise topology_mod.TopologyError(
            f"the load generator {loadgen.host!r} is a remote host; this version runs Locust on "
            "the controller: put the controller (localhost, ansible_connection=local) in the "
            "loadgen group of the inventory")
    run = new_run_folder(options.results_dir, EXPERIMENT, topology.label)
    print(f"result folder: {run.path}", file=sys.stderr, flush=True)
    try:
        with run.recording():
            _measure(run, options, topology, loadgen)
    finally:
        update_index(options.results_dir)
    return run.path


def _measure(run: RunFolder, options: RunOptions, topology, loadgen) -> None:
    protocol = options.protocol
    run.update(
        profile=protocol.profile,
        protocol=protocol.to_dict(),
        arrival=options.arrival,
        inventory=options.inventory,
        topology=topology.raw,
        loadgen={"host": loadgen.host, "cpus": loadgen.cpus, "processes": 1},
        traps={
            "arrival_pattern": (
                "spread: each Locust user starts after a random offset in [0, pacing) that its "
                "constant pacing keeps, so N users offer N requests/s spread over each second"
                if options.arrival == "spread" else
                "bursty: users start in phase (the original's pattern): N users send N "
                "simultaneous requests once per pacing interval"),
            "load_generator_cpu": (
                f"the runner samples the Locust processes' CPU with psutil every "
                f"{protocol.guard.interval_s:g} s; above {protocol.guard.threshold:.0%} of their "
                f"cores (or of one core for one process) for {protocol.guard.sustain_s:g} s the "
                "run is marked invalid (Locust's own warning samples every 10 s and misses "
                "short runs)"),
        },
    )
    _pin_to_load_generator(loadgen.cpus)
    progress = Progress(protocol.total_s, len(protocol.scenarios) * len(protocol.architectures))
    progress.say(f"verifying the lab ({len(topology.hosts)} host(s))")
    checks = verify(topology)
    run.update(verify=[dataclasses.asdict(c) for c in checks])

    load_test: dict[str, Scenario] = {}
    breaking_points: dict[str, object] = {}
    window_start = time.time()
    step = 0
    for scenario in protocol.scenarios:
        for arch in protocol.architectures:
            step += 1
            planned = scenario
            extra = {}
            if scenario.needs_breaking_point:
                if arch not in breaking_points:
                    raise RuntimeError(f"{scenario.name} needs a breaking point, but no ramp "
                                       f"scenario ran before it for {arch}")
                users = users_to_hold(breaking_points[arch], load_test[arch])
                planned = scenario.with_users(users)
                extra["breaking_point_users"] = users
            label = f"{planned.name} {arch}"
            progress.say(f"scenario {step}/{progress.steps} {label} "
                         f"({planned.max_users} users max, {planned.total_s:.0f} s)")
            result = run_locust(
                planned, topology.scoring_url(arch), protocol.paths[arch],
                run.locust_dir(planned.name, arch), arrival=options.arrival,
                cpus=loadgen.cpus, guard=protocol.guard, payload=protocol.payload, arch=arch,
                progress=progress.ticker(step, label),
                extra_env={"SCORING_LAB_SERVICE": "loadgen",
                           "SCORING_LAB_RUN_DIR": _loadgen_run_dir(topology, loadgen.host)},
            )
            progress.done_s += planned.total_s
            run.add_scenario(scenario_entry(run, planned, arch, result, **extra))
            if not result.valid:
                progress.say(f"WARNING {label} is invalid: {'; '.join(result.reasons)}")
            if planned.kind == "ramp":
                bp = breaking_point_from_dir(result.out_dir, protocol.analysis.breaking_point,
                                             pacing_s=planned.pacing_s)
                breaking_points[arch] = bp
                load_test[arch] = planned
                run.set_breaking_point(arch, bp.to_dict())
                progress.say(f"breaking point {arch}: {bp.message or bp.users}")
            time.sleep(protocol.pause_s)
    window_end = time.time()

    progress.say("collecting hardware reports and resource samples from every host")
    stored = collect_step.collect(run, options.inventory, options.ansible_playbook,
                                  window_start, window_end)
    run.update(collected=stored)
    if not stored["resources"]:
        run.warn("no resource samples were collected: is the monitor role deployed?")
    run.complete(build_headline(run.path))
    write_report(run.path)


def _loadgen_run_dir(topology, host: str) -> str:
    for entry in topology.raw.get("loadgen") or []:
        if entry.get("host") == host and entry.get("run_dir"):
            return entry["run_dir"]
    return ""
