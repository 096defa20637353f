"""Load stages of a scenario, as plain data, and the pure tick function the Locust shape
uses: `tick_at(stages, t)` is what the shape returns at run time t. No locust import here,
so tests and the runner can use it without gevent's monkey patching."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from experiments.protocol import Scenario


@dataclass(frozen=True)
class Stage:
    """Until `end_s` seconds into the run, hold `users`, spawning/stopping at `spawn_rate`/s."""

    end_s: float
    users: int
    spawn_rate: float


def stages_for(scenario: Scenario) -> list[Stage]:
    """The stages of a scenario: one stage for a constant load, one per step for a ramp
    (plus a final hold stage when hold_s > 0). Open-model scenarios have none: run_locust
    turns them into one user per Locust process driving the arrival schedule."""
    if scenario.open_model:
        raise ValueError(f"scenario {scenario.name!r} is an open model ({scenario.kind}): "
                         "run it with run_locust(..., open_model=...)")
    if scenario.kind == "constant":
        if scenario.users is None:
            raise ValueError(
                f"scenario {scenario.name!r}: users not resolved yet ({scenario.users_from}); "
                "call scenario.with_users(n) first"
            )
        return [Stage(float(scenario.duration_s), int(scenario.users), float(scenario.spawn_rate))]
    # A step's users are spawned within about one second (or within the step when shorter).
    rate = max(scenario.step_users, 1) / min(scenario.step_interval_s, 1.0)
    stages = []
    for k in range(scenario.n_steps):
        users = min(scenario.end_users, scenario.start_users + k * scenario.step_users)
        first_rate = max(rate, scenario.start_users / min(scenario.step_interval_s, 1.0))
        stages.append(
            Stage((k + 1) * scenario.step_interval_s, users, first_rate if k == 0 else rate)
        )
    if scenario.hold_s > 0:
        stages.append(Stage(stages[-1].end_s + scenario.hold_s, scenario.end_users, rate))
    return stages


def tick_at(stages: list[Stage], t: float) -> tuple[int, float] | None:
    """(users, spawn_rate) at run time t, or None once the last stage has ended."""
    for stage in stages:
        if t < stage.end_s:
            return stage.users, stage.spawn_rate
    return None


def users_at(stages: list[Stage], t: float) -> int:
    """Target user count at time t (0 before the start and after the end)."""
    if t < 0:
        return 0
    tick = tick_at(stages, t)
    return tick[0] if tick else 0


def duration_of(stages: list[Stage]) -> float:
    return stages[-1].end_s if stages else 0.0


def write_scenario_file(
    path: str | Path,
    scenario: Scenario,
    *,
    path_url: str,
    arrival: str,
    payload: list[float] | tuple[float, ...],
    seed: int | None = None,
    open_model: dict[str, Any] | None = None,
    job: dict[str, Any] | None = None,
) -> Path:
    """The JSON file given to the locustfile (through SCORING_LAB_SCENARIO). `open_model`:
    the OpenModel fields plus `streams` and `schedule_s` (see experiments.load.run); `job`:
    the open model's clients submit jobs to `path_url` and poll them
    (experiments/load/job_log.py ``JobSpec``)."""
    path = Path(path)
    doc = {
        "scenario": scenario.to_dict(),
        "stages": [asdict(s) for s in stages_for(scenario)],
        "pacing_s": scenario.pacing_s,
        "path": path_url,
        "arrival": arrival,
        "payload": list(payload),
        "seed": seed,
    }
    if open_model is not None:
        doc["open_model"] = open_model
    if job is not None:
        doc["job"] = job
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def read_scenario_file(path: str | Path) -> dict[str, Any]:
    """Read the scenario JSON; `stages` become Stage objects."""
    doc = json.loads(Path(path).read_text())
    doc["stages"] = [Stage(**s) for s in doc["stages"]]
    return doc
