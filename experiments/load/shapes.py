"""Locust load shapes built from a scenario's stages. Imports locust (gevent patching):
import this module only inside a Locust process; the stage logic itself lives in
`stages.py` and is pure.

`ConstantShape` holds one user count (the response-time, max-performance and stress
scenarios); `RampShape` steps the users up (the load test). Each has a `stages` list and a
`tick()` that only reads the run time, so `shape.tick_at(t)` can be checked at given times.
"""

from __future__ import annotations

from typing import Any

from locust import LoadTestShape

from experiments.load.stages import Stage, duration_of, tick_at


class StagesShape(LoadTestShape):
    abstract = True
    stages: list[Stage] = []

    def __init__(self, stages: list[Stage] | None = None):
        super().__init__()
        if stages is not None:
            self.stages = list(stages)

    def tick_at(self, t: float) -> tuple[int, float] | None:
        return tick_at(self.stages, t)

    def tick(self) -> tuple[int, float] | None:
        return self.tick_at(self.get_run_time())

    @property
    def duration_s(self) -> float:
        return duration_of(self.stages)


class ConstantShape(StagesShape):
    """A single stage: `users` reached at `spawn_rate`/s and held until the end."""

    abstract = True


class RampShape(StagesShape):
    """Stepped ramp: one stage per step (users grow by step_users every step_interval_s)."""

    abstract = True


def shape_for(doc: dict[str, Any]) -> type[StagesShape]:
    """A concrete shape class for a scenario document (see stages.read_scenario_file), ready
    for Locust to discover in the locustfile's namespace."""
    base = RampShape if doc["scenario"]["kind"] == "ramp" else ConstantShape
    stages = [s if isinstance(s, Stage) else Stage(**s) for s in doc["stages"]]
    return type(
        "ScenarioShape", (base,), {"stages": stages, "abstract": False, "__module__": __name__}
    )
