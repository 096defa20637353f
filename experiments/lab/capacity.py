"""The capacity search on the deployed lab: each step an open-model Locust run of its own
folder (raw/locust/capacity/<arch>/NN_<rate>rps/, a hold's NN_<rate>rps_hold/), judged from
that folder alone, so the report re-derives every verdict and the capacity from the raw data
(experiments.analysis.capacity).

    found = search(lab, params, arch, run.locust_dir("capacity", arch), payload=..., step=...)

The shared bound comes first; with `relative_bound_factor`, a second search under
factor x the architecture's own 1-user p99 reuses the first search's steps and measures only
the rates it still needs. When the protocol asks for holds (`hold_s`), the rate a search
settles on is held that long before it counts as the capacity. With `recovery_max_s`, each
step starts only once the stack answers probes as it does idle (experiments/lab/recovery.py),
restarting it through `restart` when it does not recover by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.analysis.capacity import (
    HOLD_SUFFIX,
    CapacityResult,
    StepResult,
    analyse_search,
    bound_of,
    decidable_rate,
    judge,
    long_step_s,
    one_user_p99_ms,
    planned_step_s,
    replay,
    search_capacity,
    step_dirs,
    step_result,
)
from experiments.lab.recovery import Probe, Waiter
from experiments.lab.session import Session
from experiments.load.arrivals import OpenModel
from experiments.protocol import CapacityParams, GuardParams, Scenario
from experiments.results import RunFolder
from services.describe import predict_path

# How fast a search started at a previous repeat's capacity grows: that rate is near the
# answer, so small steps close the bracket in fewer of them.
HINT_GROWTH = 1.25


def open_model(params: CapacityParams, rate: float, repeat: int = 1) -> OpenModel:
    """The open-model load of one step in repeat `repeat`: its seed is the repeat's, the same
    for every architecture and step of the repeat (common random numbers)."""
    return OpenModel(rate=rate, process=params.process, seed=params.seed_of(repeat),
                     inflight_cap=params.inflight_cap,
                     request_timeout_s=params.request_timeout_s, drain_s=params.drain_s,
                     nominal_count=params.nominal_count)


def search(lab: Session, params: CapacityParams, arch: str, arch_dir: Path, *, p99_ms: float,
           payload: Any, step: int, label: str, guard: GuardParams,
           prior: list[StepResult] = (), hint_rate: float | None = None,
           hint_growth: float = HINT_GROWTH,
           restart: Callable[[str], dict] | None = None,
           idle_key: str | None = None, repeat: int = 1, spent_s: float = 0.0,
           max_holds: int | None = None) -> CapacityResult:
    """Search arch's capacity under p99 <= p99_ms; every measured step lands in arch_dir.
    `hint_rate` (a previous repeat's capacity) starts the search there, clamped to the
    configured range, growing by the smaller `hint_growth`: the bracket closes in fewer steps.
    `restart(why)` restarts the services when a recovery wait runs out (recorded); the idle
    latency the waits learn is kept in lab.idle_ms[idle_key] for later searches of the same
    build (key: default arch). `spent_s` and `max_holds` (default: the protocol's): what is
    left of the budgets when the search resumes (search_on_below)."""
    start_rate, growth = params.start_rate, params.growth
    min_rate = decidable_rate(params)
    if hint_rate:
        start_rate = min(max(float(hint_rate), min_rate), params.max_rate)
        growth = min(hint_growth, params.growth)
    start_rate = max(start_rate, min_rate)

    bound = bound_of(params, p99_ms)
    failed = [False]  # whether the last step failed: the next one waits recovery_quiet_s
    waiter = None
    if params.recovery_max_s:
        probe = Probe(lab.topology.scoring_url(arch) + predict_path(arch), payload,
                      timeout_s=params.request_timeout_s)
        key = idle_key or arch
        waiter = Waiter(probe, params.recovery_max_s, params.recovery_tolerance, restart,
                        idle_ms=lab.idle_ms.get(key), max_idle_ms=p99_ms)

    def run_step(rate: float, duration: float, hold: bool) -> StepResult:
        n = len(step_dirs(arch_dir))
        out = arch_dir / f"{n:02d}_{rate:.2f}rps{HOLD_SUFFIX if hold else ''}"
        scenario = Scenario(name="capacity", kind="open", rate=rate, duration_s=duration)
        what = "hold" if hold else "step"
        if waiter is not None:
            record = waiter.wait(out, quiet_s=params.recovery_quiet_s if failed[0] else 0.0)
            if waiter.idle_ms is not None:
                lab.idle_ms[key] = waiter.idle_ms
            if record["waited_s"] > 5 or not record["recovered"]:
                lab.progress.say(
                    f"{label}: waited {record['waited_s']:.0f} s for the stack to recover "
                    f"({'recovered' if record['recovered'] else 'NOT recovered'}"
                    f"{', restarted' if 'restart' in record else ''})")
            # A step that starts unrecovered still runs (its folder is complete and the
            # report replays it); its record makes it invalid, which ends the search.
        lab.progress.say(f"{label}: {what} {n + 1}, {rate:.1f} req/s for {duration:.0f} s")
        lab.locust(scenario, arch, out, arrival="open", payload=payload, step=step,
                   label=f"{label} {rate:.1f}/s {what}",
                   open_model=open_model(params, rate, repeat))
        result = step_result(out, grace_s=guard.grace_s)
        failed[0] = judge(result, bound).outcome != "pass"
        return result

    def duration(rate: float) -> float:
        return planned_step_s(rate, params)

    def measure(rate: float) -> StepResult:
        return run_step(rate, duration(rate), False)

    def confirm(rate: float) -> StepResult:
        return run_step(rate, max(params.hold_s, duration(rate)), True)

    def extend(rate: float, hold: bool, requests: int | None) -> StepResult:
        """An undecided step measured again, longer: long enough for `requests` (None: as
        long as allowed), at least twice the first, at most extend_max_s."""
        first = max(params.hold_s, duration(rate)) if hold else duration(rate)
        wanted = params.extend_max_s if requests is None else requests / rate
        return run_step(rate, min(max(wanted, 2 * first), params.extend_max_s), hold)

    return search_capacity(measure, bound, start_rate=start_rate,
                           max_rate=params.max_rate, min_rate=min_rate,
                           growth=growth, precision=params.precision,
                           max_steps=params.max_steps, prior=prior,
                           confirm=confirm if params.hold_s else None,
                           max_holds=params.max_holds if max_holds is None else max_holds,
                           extend=extend if params.extend_max_s else None,
                           budget_s=params.budget_s, hold_reserve_s=params.hold_s,
                           long_step_s=long_step_s(params), spent_s=spent_s)


def search_and_settle(lab: Session, params: CapacityParams, arch: str, arch_dir: Path, *,
                      label: str, payload: Any, step: int, guard: GuardParams,
                      hint_rate: float | None = None, hint_growth: float = HINT_GROWTH,
                      restart: Callable[[str], dict] | None = None,
                      idle_key: str | None = None,
                      one_user_dir: Path | None = None, repeat: int = 1) -> dict[str, dict]:
    """The capacity of arch under the shared bound (search, from `hint_rate` when given) and,
    when params set relative_bound_factor and one_user_dir holds a 1-user run, under factor x
    that run's p99 (a second search reusing the first's steps): the manifest entry
    {"shared": ..., "relative": ...}, each settled over every step both searches measured,
    as the report derives it (a step the second search added near the knee can move the
    shared capacity: noise there is not monotonic), so the rate held next, the next repeat's
    start and the report name the same capacity."""
    common = {"payload": payload, "step": step, "guard": guard, "restart": restart,
              "idle_key": idle_key, "repeat": repeat}
    shared = search(lab, params, arch, arch_dir, p99_ms=params.p99_bound_ms, label=label,
                    hint_rate=hint_rate, hint_growth=hint_growth, **common)
    entry = {"shared": {"p99_bound_ms": params.p99_bound_ms, **shared.to_dict()}}
    base_p99 = (one_user_p99_ms(one_user_dir)
                if params.relative_bound_factor and one_user_dir is not None else None)
    if base_p99 is not None and shared.status != "invalid":
        bound = params.relative_bound_factor * base_p99
        prior = [step_result(d, grace_s=guard.grace_s) for d in step_dirs(arch_dir)]
        relative = search(lab, params, arch, arch_dir, p99_ms=bound, prior=prior,
                          label=f"capacity {arch} (p99 <= {params.relative_bound_factor:g} x "
                                f"{base_p99:.0f} ms)", **common)
        entry["relative"] = {"p99_bound_ms": bound, "one_user_p99_ms": base_p99,
                             "factor": params.relative_bound_factor, **relative.to_dict()}
    settled = analyse_search(arch_dir, params, guard.grace_s, one_user_dir)
    if settled is not None and shared.status != "invalid":
        for key in entry:
            entry[key].update(settled[key])
    # one answer per search: the progress log says what the manifest and the report say
    for key, e in entry.items():
        lab.progress.say(f"{label} ({key} bound): {e['status']}, {e['capacity']} req/s "
                         f"(first failing {e['first_failing']})")
    return entry


def search_on_below(lab: Session, params: CapacityParams, arch: str, arch_dir: Path,
                    proofs: list[StepResult], *, label: str, payload: Any, step: int,
                    guard: GuardParams, restart: Callable[[str], dict] | None = None,
                    idle_key: str | None = None, repeat: int = 1) -> float | None:
    """Under proof_search_on, after a proof that did not pass: the search (under the shared
    bound) resumed with every step in arch_dir and every proof so far as its holds, so it goes
    on below the failed proof as after a failed hold, within what is left of its budget (the
    seconds its steps and proofs spent; without a time budget, the holds left of max_holds).
    Its new steps land as further folders of arch_dir. Returns the capacity the folder now
    replays to (experiments.analysis.capacity.replay over steps and proofs: what the next proof
    holds), None when there is none."""
    prior = [*(step_result(d, grace_s=guard.grace_s) for d in step_dirs(arch_dir)), *proofs]
    spent = sum(s.duration_s or 0.0 for s in prior)
    holds_left = max(0, params.max_holds - sum(1 for s in prior if s.hold))
    search(lab, params, arch, arch_dir, p99_ms=params.p99_bound_ms, payload=payload,
           step=step, label=label, guard=guard, prior=prior, restart=restart,
           idle_key=idle_key, repeat=repeat, spent_s=spent, max_holds=holds_left)
    steps = [step_result(d, grace_s=guard.grace_s) for d in step_dirs(arch_dir)]
    settled = replay(params, [*steps, *proofs], params.p99_bound_ms)
    return None if settled.status == "invalid" else settled.capacity


def record(run: RunFolder, key: str, path: tuple[str, ...], entry: dict) -> None:
    """A search's entry into the manifest at manifest[key][path[0]]...[path[-1]], what the
    table holds already kept (experiment 3: capacity[arch]; a ladder: capacity[rung][arch] and
    capacity_repeats[repeat][rung][arch])."""
    table = run.manifest.get(key) or {}
    node = table
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = entry
    run.update(**{key: table})
