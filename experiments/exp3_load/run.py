"""Experiment 3: the original's four Locust load tests on both architectures, interleaved
(same load for both), the breaking point of each detected from its load test and held in the
max-performance test. Analysis reads only the result folder, so a committed run can be
re-reported anywhere."""

from __future__ import annotations

import time
from pathlib import Path

from experiments.analysis.breaking_point import breaking_point_from_dir, users_to_hold
from experiments.experiment import Finish
from experiments.lab.session import RunOptions, session
from experiments.protocol import Protocol, Scenario
from experiments.results import scenario_entry


def traps(protocol: Protocol, arrival: str) -> dict[str, str]:
    """How this run handles the two measurement traps, for the manifest."""
    guard = protocol.guard
    return {
        "arrival_pattern": (
            "spread: each Locust user starts after a random offset in [0, pacing) that its "
            "constant pacing keeps, so N users offer N requests/s spread over each second"
            if arrival == "spread" else
            "bursty: users start in phase (the original's pattern): N users send N "
            "simultaneous requests once per pacing interval"),
        "load_generator_cpu": (
            f"the runner samples the Locust processes' CPU with psutil every "
            f"{guard.interval_s:g} s; above {guard.threshold:.0%} of their cores (or of one core "
            f"for one process) for {guard.sustain_s:g} s the run is marked invalid (Locust's "
            "own warning samples every 10 s and misses short runs)"),
    }


def run(protocol: Protocol, options: RunOptions, finish: Finish) -> Path:
    """Every scenario on every architecture, interleaved; the breaking point of each load
    test detected at once and held by the scenarios that need it."""
    arrival = protocol.arrival
    steps = len(protocol.scenarios) * len(protocol.architectures)
    with session(protocol.experiment, options, planned_s=protocol.total_s, steps=steps,
                 guard=protocol.guard, finish=finish,
                 profile=protocol.profile,
                 protocol=protocol.to_dict(), arrival=arrival,
                 traps=traps(protocol, arrival)) as lab:
        run, progress = lab.run, lab.progress
        load_tests: dict[str, Scenario] = {}
        breaking_points = {}
        step = 0
        for scenario in protocol.scenarios:
            for arch in protocol.architectures:
                step += 1
                planned, extra = scenario, {}
                if scenario.needs_breaking_point:
                    if arch not in breaking_points:
                        raise RuntimeError(f"{scenario.name} needs a breaking point, but no "
                                           f"ramp scenario ran before it for {arch}")
                    users = users_to_hold(breaking_points[arch], load_tests[arch])
                    planned = scenario.with_users(users)
                    extra["breaking_point_users"] = users
                label = f"{planned.name} {arch}"
                progress.say(f"step {step}/{steps} {label} "
                             f"({planned.max_users} users max, {planned.total_s:.0f} s)")
                result = lab.locust(planned, arch, run.locust_dir(planned.name, arch),
                                    arrival=arrival, payload=protocol.payload, step=step,
                                    label=label)
                run.add_scenario(scenario_entry(run, planned, arch, result, **extra))
                if planned.kind == "ramp":
                    bp = breaking_point_from_dir(result.out_dir,
                                                 protocol.analysis.breaking_point,
                                                 pacing_s=planned.pacing_s)
                    breaking_points[arch], load_tests[arch] = bp, planned
                    run.set_breaking_point(arch, bp.to_dict())
                    progress.say(f"breaking point {arch}: {bp.message or bp.users}")
                time.sleep(protocol.pause_s)
    return run.path
