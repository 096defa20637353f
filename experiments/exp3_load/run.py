"""Experiment 3: the original's four Locust load tests on both architectures, interleaved
(same load for both), the breaking point of each detected from its load test and held in the
max-performance test. Analysis reads only the result folder, so a committed run can be
re-reported anywhere."""

from __future__ import annotations

import time
from pathlib import Path

from experiments.analysis.breaking_point import breaking_point_from_dir, users_to_hold
from experiments.analysis.capacity import (
    PROOF_PREFIX,
    analyse_with_proofs,
    bound_of,
    proof_dirs,
    proof_record,
    proof_step,
)
from experiments.experiment import Finish
from experiments.lab import capacity as capacity_search
from experiments.lab.renew import renew, restart_stuck
from experiments.lab.session import RunOptions, Session, session
from experiments.protocol import Protocol, Scenario
from experiments.repeats import abba, locust_root
from experiments.results import iso, scenario_entry


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


def run_capacity(lab: Session, protocol: Protocol, arch: str, step: int, base: Path,
                 hint_rate: float | None = None, repeat: int = 1) -> dict:
    """The capacity of arch under the shared bound and, when configured, under a bound
    relative to its own 1-user p99 (both searches' steps under base/capacity/<arch>/, the
    1-user run under base/response_time/<arch>/). `hint_rate`: the previous repeat's capacity,
    where this repeat's shared search starts (experiments.lab.capacity.search)."""
    params = protocol.capacity
    entry = capacity_search.search_and_settle(
        lab, params, arch, _dir(base, "capacity", arch),
        label=f"capacity {arch} (p99 <= {params.p99_bound_ms:g} ms)", payload=protocol.payload,
        step=step, guard=protocol.guard, hint_rate=hint_rate,
        restart=lambda why: restart_stuck(lab, why), one_user_dir=base / "response_time" / arch,
        repeat=repeat)
    entry["shared"]["hint_rate"] = hint_rate
    return entry


def _prove(lab: Session, protocol: Protocol, arch: str, k: int, base: Path,
           planned: Scenario, step: int, tag: str, entry: dict) -> dict:
    """Under proof_search_on, after the max-performance run at the capacity found (the first
    proof, in base/max_performance/<arch>/): while the last proof did not pass (judged as
    capacity_proof judges it; undecided counts as not passed, so a capacity errs low) and fewer
    than max_proofs ran, the search goes on below it (search_on_below) and a new proof runs
    at the new capacity, in its own folder base/max_performance/<arch>/proof_NN/. Returns the
    capacity entry as the report replays it from those folders (analyse_with_proofs)."""
    params, guard = protocol.capacity, protocol.guard
    bound = bound_of(params, params.p99_bound_ms)
    mp_dir = base / planned.name / arch
    while True:
        proofs = [proof_step(d, guard.grace_s, n)
                  for n, d in enumerate(proof_dirs(mp_dir), 1)]
        last = proof_record(proofs[-1], bound)
        if last["outcome"] == "pass" or len(proofs) >= params.max_proofs:
            break
        lab.progress.say(f"{tag}proof {len(proofs)} of {arch} at {last['rate']:.1f} req/s "
                         f"not confirmed ({last['outcome']}, p99 "
                         f"{last['p99_response_ms']:.0f} ms): searching on below")
        capacity = capacity_search.search_on_below(
            lab, params, arch, base / "capacity" / arch, proofs,
            label=f"{tag}capacity {arch} below proof {len(proofs)}", payload=protocol.payload,
            step=step, guard=guard, restart=lambda why: restart_stuck(lab, why), repeat=k)
        if capacity is None:
            break
        out = mp_dir / f"{PROOF_PREFIX}{len(proofs) + 1:02d}"
        if out.exists():
            raise RuntimeError(f"{out} exists: a proof's folder is never overwritten")
        out.mkdir(parents=True)
        again = planned.with_rate(capacity)
        label = f"{tag}{again.name} {arch} proof {len(proofs) + 1}"
        lab.progress.say(f"step {step} {label} ({capacity:.1f} req/s open model, "
                         f"{again.total_s:.0f} s)")
        lab.locust(again, arch, out, arrival="open", payload=protocol.payload, step=step,
                   label=label, open_model=capacity_search.open_model(params, capacity, k))
        time.sleep(protocol.pause_s)
    settled = analyse_with_proofs(base, arch, params, guard.grace_s)
    if settled is None:
        return entry
    settled["shared"]["hint_rate"] = entry["shared"].get("hint_rate")
    s = settled["shared"]
    lab.progress.say(f"{tag}capacity {arch} after {len(s['proofs'])} proof(s): {s['status']}, "
                     f"{s['capacity']} req/s, last proof {s['proof']['outcome']}")
    return settled


def _dir(base: Path, scenario: str, arch: str) -> Path:
    d = base / scenario / arch
    d.mkdir(parents=True, exist_ok=True)
    return d


def run(protocol: Protocol, options: RunOptions, finish: Finish) -> Path:
    """`repeats` times every scenario on every architecture, interleaved, the architectures'
    order alternated between repeats (ABBA) and the services restarted before every repeat
    but the first; in each repeat the breaking point of each load test detected at once and
    held by the scenarios that need it, the capacity of each searched (from the previous
    repeat's capacity) and held by an open scenario with rate = "capacity"."""
    arrival = protocol.arrival
    per_repeat = len(protocol.scenarios) * len(protocol.architectures)
    steps = per_repeat * protocol.repeats
    with session(protocol.experiment, options, planned_s=protocol.total_s, steps=steps,
                 guard=protocol.guard, finish=finish,
                 profile=protocol.profile,
                 protocol=protocol.to_dict(), arrival=arrival,
                 traps=traps(protocol, arrival)) as lab:
        records: list[dict] = []
        hints: dict[str, float] = {}
        for k in range(1, protocol.repeats + 1):
            record = {"repeat": k, "order": abba(protocol.architectures, k),
                      "started_at": iso(time.time())}
            if k > 1:
                record["renewed"] = renew(lab, options, k, {},
                                          lab.run.raw / "deploy" / f"repeat-{k}.log")
            records.append(record)
            lab.run.update(repeats=records)
            found = _run_repeat(lab, protocol, k, record, step0=(k - 1) * per_repeat,
                                steps=steps, hints=hints)
            hints = {a: c["shared"]["capacity"] for a, c in found.items()
                     if c["shared"].get("capacity")}
            record["ended_at"] = iso(time.time())
            lab.run.update(repeats=records)
    return lab.run.path


def _run_repeat(lab: Session, protocol: Protocol, k: int, record: dict, *, step0: int,
                steps: int, hints: dict[str, float]) -> dict[str, dict]:
    """One repeat: every scenario on every architecture in the repeat's order. Its breaking
    points and capacities go to its manifest record (and, for repeat 1, to the top-level
    breaking_points and capacity every run had before repeats). Returns the capacities."""
    run, progress, arrival = lab.run, lab.progress, protocol.arrival
    base = locust_root(run.raw, k, protocol.repeats)
    tag = f"r{k}/{protocol.repeats} " if protocol.repeats > 1 else ""
    load_tests: dict[str, Scenario] = {}
    breaking_points = {}
    capacities: dict[str, dict] = {}
    step = step0
    for scenario in protocol.scenarios:
        for arch in record["order"]:
            step += 1
            if scenario.kind == "capacity":
                capacities[arch] = run_capacity(lab, protocol, arch, step, base,
                                                hint_rate=hints.get(arch), repeat=k)
                record.setdefault("capacity", {})[arch] = capacities[arch]
                if k == 1:
                    capacity_search.record(run, "capacity", (arch,), capacities[arch])
                run.update(repeats=run.manifest["repeats"])
                time.sleep(protocol.pause_s)
                continue
            planned, extra, model = scenario, {"repeat": k}, None
            if scenario.needs_capacity:
                found = capacities[arch]["shared"]
                if not found["capacity"]:
                    progress.say(f"{tag}{scenario.name} {arch}: skipped, no capacity was "
                                 f"found ({found['status']})")
                    run.warn(f"{scenario.name}/{arch} (repeat {k}) not run: the capacity "
                             f"search ended {found['status']} with no passing rate")
                    continue
                planned = scenario.with_rate(found["capacity"])
                extra.update(capacity_rps=found["capacity"],
                             first_overloaded_rps=found["first_failing"])
            if planned.kind == "open":
                model = capacity_search.open_model(protocol.capacity, planned.rate, k)
            if scenario.needs_breaking_point:
                if arch not in breaking_points:
                    raise RuntimeError(f"{scenario.name} needs a breaking point, but no "
                                       f"ramp scenario ran before it for {arch}")
                users = users_to_hold(breaking_points[arch], load_tests[arch])
                planned = scenario.with_users(users)
                extra["breaking_point_users"] = users
            label = f"{tag}{planned.name} {arch}"
            load = (f"{planned.rate:.1f} req/s open model" if model else
                    f"{planned.max_users} users max")
            progress.say(f"step {step}/{steps} {label} ({load}, {planned.total_s:.0f} s)")
            result = lab.locust(planned, arch, _dir(base, planned.name, arch),
                                arrival="open" if model else arrival,
                                payload=protocol.payload, step=step, label=label,
                                open_model=model)
            run.add_scenario(scenario_entry(run, planned, arch, result, **extra))
            if scenario.needs_capacity and protocol.capacity.proof_search_on:
                capacities[arch] = _prove(lab, protocol, arch, k, base, planned, step,
                                          tag, capacities[arch])
                record["capacity"][arch] = capacities[arch]
                if k == 1:
                    capacity_search.record(run, "capacity", (arch,), capacities[arch])
                run.update(repeats=run.manifest["repeats"])
            if planned.kind == "ramp":
                bp = breaking_point_from_dir(result.out_dir,
                                             protocol.analysis.breaking_point,
                                             pacing_s=planned.pacing_s)
                breaking_points[arch], load_tests[arch] = bp, planned
                record.setdefault("breaking_points", {})[arch] = bp.to_dict()
                if k == 1:
                    run.set_breaking_point(arch, bp.to_dict())
                run.update(repeats=run.manifest["repeats"])
                progress.say(f"breaking point {arch}: {bp.message or bp.users}")
            time.sleep(protocol.pause_s)
    return capacities
