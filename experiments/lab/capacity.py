"""The capacity search on the deployed lab: each step an open-model Locust run of its own
folder (raw/locust/capacity/<arch>/NN_<rate>rps/, a hold's NN_<rate>rps_hold/), judged from
that folder alone, so the report re-derives every verdict and the capacity from the raw data
(experiments.analysis.capacity).

    found = search(lab, params, arch, run.locust_dir("capacity", arch), payload=..., step=...)

The shared bound comes first; with `relative_bound_factor`, a second search under
factor x the architecture's own 1-user p99 reuses the first search's steps and measures only
the rates it still needs. When the protocol asks for holds (`hold_s`), the rate a search
settles on is held that long before it counts as the capacity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.analysis.capacity import (
    HOLD_SUFFIX,
    CapacityResult,
    StepResult,
    bound_of,
    search_capacity,
    step_dirs,
    step_duration,
    step_result,
)
from experiments.lab.session import Session
from experiments.load.arrivals import OpenModel
from experiments.protocol import CapacityParams, GuardParams, Scenario


def open_model(params: CapacityParams, rate: float) -> OpenModel:
    return OpenModel(rate=rate, process=params.process, seed=params.seed,
                     inflight_cap=params.inflight_cap,
                     request_timeout_s=params.request_timeout_s, drain_s=params.drain_s)


def search(lab: Session, params: CapacityParams, arch: str, arch_dir: Path, *, p99_ms: float,
           payload: Any, step: int, label: str, guard: GuardParams,
           prior: list[StepResult] = (), hint_rate: float | None = None,
           hint_growth: float = 1.25) -> CapacityResult:
    """Search arch's capacity under p99 <= p99_ms; every measured step lands in arch_dir.
    `hint_rate` (a previous repeat's capacity) starts the search there, clamped to the
    configured range, growing by the smaller `hint_growth`: the bracket closes in fewer steps."""
    start_rate, growth = params.start_rate, params.growth
    if hint_rate:
        start_rate = min(max(float(hint_rate), params.min_rate), params.max_rate)
        growth = min(hint_growth, params.growth)

    def run_step(rate: float, duration: float, hold: bool) -> StepResult:
        n = len(step_dirs(arch_dir))
        out = arch_dir / f"{n:02d}_{rate:.2f}rps{HOLD_SUFFIX if hold else ''}"
        scenario = Scenario(name="capacity", kind="open", rate=rate, duration_s=duration)
        what = "hold" if hold else "step"
        lab.progress.say(f"{label}: {what} {n + 1}, {rate:.1f} req/s for {duration:.0f} s")
        lab.locust(scenario, arch, out, arrival="open", payload=payload, step=step,
                   label=f"{label} {rate:.1f}/s {what}", open_model=open_model(params, rate))
        return step_result(out, grace_s=guard.grace_s)

    def measure(rate: float) -> StepResult:
        return run_step(rate, step_duration(rate, params.min_step_s, params.min_requests), False)

    def confirm(rate: float) -> StepResult:
        return run_step(rate, max(params.hold_s, step_duration(rate, params.min_step_s,
                                                                params.min_requests)), True)

    return search_capacity(measure, bound_of(params, p99_ms), start_rate=start_rate,
                           max_rate=params.max_rate, min_rate=params.min_rate,
                           growth=growth, precision=params.precision,
                           max_steps=params.max_steps, prior=prior,
                           confirm=confirm if params.hold_s else None,
                           max_holds=params.max_holds)
