"""Running a ladder (experiments/ladder.py) on the deployed lab: each rung deployed in turn by
Ansible, verified, then measured: the latency of one user (scoring handler, and for sync
variants the model API alone: a blocking worker's hold time), the step load per arrival pattern
(breaking point, max requests/s) and, where the protocol has one, the capacity search. The
default build is redeployed at the end, whatever happened. Experiments 4, 5 and 6 run their
rungs with it; the analysis of the folder is experiments/analysis/ladder.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.analysis.breaking_point import BreakingPoint, breaking_point_from_dir
from experiments.analysis.ceiling import sync_worker_kind, workers_in_effect
from experiments.analysis.ladder import capacity_dir
from experiments.constants import CAPACITY, LOAD_TEST, PROBE
from experiments.lab import capacity as capacity_search
from experiments.lab import topology as topology_mod
from experiments.lab.capacity import HINT_GROWTH
from experiments.lab.deploy import DeployError, switch
from experiments.lab.renew import restart_stuck, restart_vars
from experiments.lab.session import RunOptions, Session, StepHook, session
from experiments.lab.verify import VerifyError
from experiments.ladder import Ladder, Variant
from experiments.protocol import CapacityParams, Protocol
from experiments.repeats import abba, locust_root
from experiments.results import scenario_entry
from services.settings import settings_from_env


def workers_of(topology: topology_mod.Topology, variant: Variant) -> dict[str, Any]:
    """Workers (and threads) in effect per service, from the deployed topology."""
    out: dict[str, Any] = {}
    for service in ("model-sync", "model-async", "scoring-sync", "scoring-async"):
        s = topology.services[service]
        arch = service.rsplit("-", 1)[1]
        env = variant.model_api_env if service.startswith("model") else variant.scoring_handler_env
        entry = {"workers": workers_in_effect(arch, len(s.get("cpus") or []), s.get("workers")),
                 "cpus": s.get("cpus"), "env": dict(env)}
        if arch == "sync":
            # the services' own reader: its defaults are the ones the deployed workers use
            entry.update(sync_worker_kind(settings_from_env(env)))
        out[service] = entry
    return out


def _measure(lab: Session, ladder: Ladder, variant: Variant, step_no: list[int],
             steps: int, repeat: int = 1, hints: dict | None = None) -> None:
    run, p = lab.run, ladder.protocol
    root = locust_root(run.raw, repeat, p.repeats)
    ramps: dict[str, BreakingPoint] = {}  # arch -> this rung's spread step load
    for v, step, arch, arrival in ladder.runs(repeat):
        if v is not variant:
            continue
        step_no[0] += 1
        if step == CAPACITY:
            _capacity(lab, p, variant, arch, step_no[0], steps, repeat, root, hints,
                      ramp=ramps.get(arch))
            time.sleep(p.pause_s)
            continue
        scenario = p.scenario(LOAD_TEST if step == LOAD_TEST else PROBE)
        role, url = "scoring", None
        if step == "probe-model":
            role, url = "model", lab.topology.url(variant.model_service(arch))
        sub = f"{step}-{arrival}" if step == LOAD_TEST else step
        out = root / variant.name / sub / arch
        label = f"{variant.name} {sub} {arch}" + (f" r{repeat}" if p.repeats > 1 else "")
        lab.progress.say(f"step {step_no[0]}/{steps} {label} ({scenario.total_s:.0f} s)")
        result = lab.locust(scenario, arch, out, arrival=arrival, payload=p.payload,
                            step=step_no[0], label=label, url=url)
        extra: dict[str, Any] = {"variant": variant.name, "step": sub, "role": role,
                                 "repeat": repeat}
        if step == LOAD_TEST:
            bp = breaking_point_from_dir(out, p.analysis.breaking_point,
                                         pacing_s=scenario.pacing_s)
            extra["breaking_point"] = bp.to_dict()
            lab.progress.say(f"{label}: {bp.message}")
            if arrival == "spread":
                ramps[arch] = bp
        run.add_scenario(scenario_entry(run, scenario, arch, result, **extra))
        time.sleep(p.pause_s)


def search_start(params: CapacityParams, previous: float | None,
                 ramp: BreakingPoint | None) -> tuple[float | None, float, str]:
    """Where a rung's search starts (hint rate, growth, why): at the previous repeat's
    capacity, growing by little; else at the throughput its step load reached (at the knee,
    or its best if it had none), growing as configured: the rungs' capacities span ~1 to ~525
    req/s (the quick run of 2026-12-01), and a search from one start_rate for all of them spent
    most of its steps getting there (the original async build's search took 9 minutes)."""
    if previous:
        return previous, HINT_GROWTH, "the previous repeat's capacity"
    if ramp is not None:
        rate = ramp.achieved_rps if ramp.found and ramp.achieved_rps else ramp.max_achieved_rps
        if rate and rate > 0:
            where = "at its knee" if ramp.found else "at its best (no knee)"
            return rate, params.growth, f"the step load's throughput {where}"
    return None, params.growth, "the configured start_rate"


def _capacity(lab: Session, p: Protocol, variant: Variant, arch: str, step: int,
              steps: int, repeat: int = 1, root: Path | None = None,
              hints: dict | None = None, ramp: BreakingPoint | None = None) -> None:
    """The rung's capacity under the shared bound, searched from search_start (the previous
    repeat's capacity is kept in `hints`); the result, settled over its steps as the report
    re-derives it, kept in the manifest (capacity: repeat 1's, by variant and arch;
    capacity_repeats: every repeat's)."""
    params = p.capacity
    root = root if root is not None else locust_root(lab.run.raw, repeat, p.repeats)
    hints = hints if hints is not None else {}
    label = f"{variant.name} capacity {arch} (p99 <= {params.p99_bound_ms:g} ms)"
    hint, growth, why = search_start(params, hints.get((variant.name, arch)), ramp)
    lab.progress.say(f"step {step}/{steps} {label}, from {why}"
                     + (f" ({hint:.1f} req/s)" if hint else ""))
    entry = capacity_search.search_and_settle(
        lab, params, arch, capacity_dir(root, variant.name, arch), label=label,
        payload=p.payload, step=step, guard=p.guard, hint_rate=hint, hint_growth=growth,
        restart=lambda why: restart_stuck(lab, why), idle_key=f"{variant.name}/{arch}",
        repeat=repeat)
    if entry["shared"]["capacity"]:
        hints[(variant.name, arch)] = entry["shared"]["capacity"]
    entry["start"] = {"rate": hint or params.start_rate, "growth": growth, "from": why}
    if repeat == 1:
        capacity_search.record(lab.run, "capacity", (variant.name, arch), entry)
    capacity_search.record(lab.run, "capacity_repeats", (str(repeat), variant.name, arch), entry)


def run(ladder: Ladder, options: RunOptions, finish: Callable[[Path], Any], *,
        step_hooks: tuple[StepHook, ...] = ()) -> Path:
    """Deploy, verify and measure every variant of the ladder; redeploy the default build
    at the end (always); collect; `finish` (the experiment's analysis and report,
    experiments.experiment.Finish). `step_hooks`: around every Locust run (Session.locust).
    Returns the result folder."""
    p = ladder.protocol
    steps = len(ladder.runs()) * p.repeats
    with session(p.experiment, options, planned_s=ladder.total_s, steps=steps, guard=p.guard,
                 finish=finish, profile=p.profile, protocol=p.to_dict(), arrival=p.arrival,
                 ladder=ladder.to_dict(), variants=[]) as lab:
        lab.step_hooks = tuple(step_hooks)
        run = lab.run
        deploy_dir = run.raw / "deploy"
        current: dict[str, Any] | None = None  # unknown until the first deploy
        records: list[dict[str, Any]] = []
        step_no = [0]
        hints: dict[tuple[str, str], float] = {}
        try:
            for k in range(1, p.repeats + 1):
                for i, variant in enumerate(abba(ladder.variants, k), 1):
                    stem = (f"{i:02d}-{variant.name}" if p.repeats == 1
                            else f"r{k}-{i:02d}-{variant.name}")
                    pre = variant.prerequisite_vars(lab.topology.services)
                    prerequisite: dict[str, Any] = {}
                    if pre is not None:
                        # the services it calls first (their addresses then in lab.topology);
                        # the rung's own deploy below changes only what needs those addresses
                        current = None
                        prerequisite = {"deploy_vars": pre}
                        try:
                            prerequisite["deploy"] = switch(
                                lab, options, pre, what=f"the services {variant.name} calls",
                                log=deploy_dir / f"{stem}-prerequisite.log")
                        except (DeployError, VerifyError) as exc:
                            prerequisite["failed"] = str(exc)
                            records.append({**variant.to_dict(), "repeat": k,
                                            "prerequisite": prerequisite,
                                            "failed": f"its prerequisite deploy: {exc}"})
                            run.update(variants=records)
                            run.warn(f"variant {variant.name} was not measured: {exc}")
                            lab.progress.say(f"WARNING variant {variant.name} failed: {exc}")
                            continue
                    extra_vars = variant.deploy_vars(lab.topology.services)
                    # From the second repeat on every rung is redeployed with a new restart
                    # token, so its services restart even when the previous rung had the
                    # same settings (experiments/lab/renew.py): the spread includes that.
                    wanted = (restart_vars(extra_vars, f"{run.path.name}-r{k}-{variant.name}")
                              if k > 1 else extra_vars)
                    entry: dict[str, Any] = {**variant.to_dict(), "deploy_vars": wanted,
                                             "repeat": k,
                                             **({"prerequisite": prerequisite}
                                                if prerequisite else {})}
                    if wanted != current:
                        current = None  # unknown until this deploy and its verify succeed
                        try:
                            entry["deploy"] = switch(lab, options, wanted,
                                                     log=deploy_dir / f"{stem}.log",
                                                     what=f"variant {variant.name}")
                        except (DeployError, VerifyError) as exc:
                            # A variant that does not deploy or answer is a finding, not a
                            # reason to lose the rest of the ladder: record it and go on.
                            entry["failed"] = str(exc)
                            records.append(entry)
                            run.update(variants=records)
                            run.warn(f"variant {variant.name} was not measured: {exc}")
                            lab.progress.say(f"WARNING variant {variant.name} failed: {exc}")
                            continue
                        current = wanted
                        lab.deploy_vars = wanted  # what a stuck stack is restarted with
                    else:
                        entry["deploy"] = {"skipped": "same deployment as the previous variant"}
                    entry["workers"] = workers_of(lab.topology, variant)
                    entry["window_start"] = time.time()
                    records.append(entry)
                    _measure(lab, ladder, variant, step_no, steps, k, hints)
                    entry["window_end"] = time.time()
                    run.update(variants=records)
        finally:
            if current != {}:
                restore = switch(lab, options, {}, log=deploy_dir / "99-restore-default.log",
                                 what="the default build again")
                run.update(restore_default=restore)
            else:
                run.update(restore_default={"skipped": "the last variant was the default build"})
    return run.path
