"""Experiment 3: the original's four Locust load tests on both architectures, interleaved
(same load for both), the breaking point of each detected from its load test and held in the
max-performance test. Analysis reads only the result folder, so a committed run can be
re-reported anywhere."""

from __future__ import annotations

import time
from pathlib import Path

from experiments.analysis.breaking_point import breaking_point_from_dir, users_to_hold
from experiments.analysis.capacity import analyse_search, one_user_p99_ms, step_dirs, step_result
from experiments.experiment import Finish
from experiments.lab import capacity as capacity_search
from experiments.lab.session import RunOptions, Session, session
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


def run_capacity(lab: Session, protocol: Protocol, arch: str, step: int) -> dict:
    """The capacity of arch under the shared bound and, when configured, under a bound
    relative to its own 1-user p99; both recorded in the manifest."""
    params, run = protocol.capacity, lab.run
    arch_dir = run.locust_dir("capacity", arch)
    common = {"payload": protocol.payload, "step": step, "guard": protocol.guard}
    shared = capacity_search.search(lab, params, arch, arch_dir, p99_ms=params.p99_bound_ms,
                                    label=f"capacity {arch} (p99 <= {params.p99_bound_ms:g} ms)",
                                    **common)
    entry = {"shared": {"p99_bound_ms": params.p99_bound_ms, **shared.to_dict()}}
    lab.progress.say(f"capacity {arch}: {shared.status}, {shared.capacity} req/s "
                     f"(first failing {shared.first_failing})")
    base = (one_user_p99_ms(run.raw / "locust" / "response_time" / arch)
            if params.relative_bound_factor else None)
    if base is not None and shared.status != "invalid":
        bound = params.relative_bound_factor * base
        prior = [step_result(d, grace_s=protocol.guard.grace_s) for d in step_dirs(arch_dir)]
        relative = capacity_search.search(
            lab, params, arch, arch_dir, p99_ms=bound, prior=prior,
            label=f"capacity {arch} (p99 <= {params.relative_bound_factor:g} x "
                  f"{base:.0f} ms)", **common)
        entry["relative"] = {"p99_bound_ms": bound, "one_user_p99_ms": base,
                             "factor": params.relative_bound_factor, **relative.to_dict()}
    # The verdict over every step both searches measured, as the report derives it: a step the
    # second search added near the knee can move the shared capacity (noise there is not
    # monotonic), and the rate held next must be the one the report names.
    settled = analyse_search(arch_dir, params, protocol.guard.grace_s,
                             run.raw / "locust" / "response_time" / arch)
    if settled is not None and shared.status != "invalid":
        for key in entry:
            entry[key].update(settled[key])
    run.update(capacity={**(run.manifest.get("capacity") or {}), arch: entry})
    return entry


def run(protocol: Protocol, options: RunOptions, finish: Finish) -> Path:
    """Every scenario on every architecture, interleaved; the breaking point of each load
    test detected at once and held by the scenarios that need it; the capacity of each
    searched and held by an open scenario with rate = "capacity"."""
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
        capacities: dict[str, dict] = {}
        step = 0
        for scenario in protocol.scenarios:
            for arch in protocol.architectures:
                step += 1
                if scenario.kind == "capacity":
                    capacities[arch] = run_capacity(lab, protocol, arch, step)
                    time.sleep(protocol.pause_s)
                    continue
                planned, extra, model = scenario, {}, None
                if scenario.needs_capacity:
                    found = capacities[arch]["shared"]
                    if not found["capacity"]:
                        progress.say(f"{scenario.name} {arch}: skipped, no capacity was found "
                                     f"({found['status']})")
                        run.warn(f"{scenario.name}/{arch} not run: the capacity search "
                                 f"ended {found['status']} with no passing rate")
                        continue
                    planned = scenario.with_rate(found["capacity"])
                    extra.update(capacity_rps=found["capacity"],
                                 first_overloaded_rps=found["first_failing"])
                if planned.kind == "open":
                    model = capacity_search.open_model(protocol.capacity, planned.rate)
                if scenario.needs_breaking_point:
                    if arch not in breaking_points:
                        raise RuntimeError(f"{scenario.name} needs a breaking point, but no "
                                           f"ramp scenario ran before it for {arch}")
                    users = users_to_hold(breaking_points[arch], load_tests[arch])
                    planned = scenario.with_users(users)
                    extra["breaking_point_users"] = users
                label = f"{planned.name} {arch}"
                load = (f"{planned.rate:.1f} req/s open model" if model else
                        f"{planned.max_users} users max")
                progress.say(f"step {step}/{steps} {label} ({load}, {planned.total_s:.0f} s)")
                result = lab.locust(planned, arch, run.locust_dir(planned.name, arch),
                                    arrival="open" if model else arrival,
                                    payload=protocol.payload, step=step, label=label,
                                    open_model=model)
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
