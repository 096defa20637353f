"""Experiment 8's config (experiments/exp8_queue/config.toml): the typed tables, the profile
resolved through the one loader, the capacities settled (experiments/found_capacities.py).

    cfg = load_queue("experiments/exp8_queue/config.toml", "quick")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, Strict, model_validator

from experiments.config import ConfigError, Float, Int, Str, Table, parse, read
from experiments.constants import ARCHS
from experiments.found_capacities import CapacityFrom, settle_capacities
from experiments.load.job_log import JobSpec
from experiments.protocol import (
    DEFAULT_PAYLOAD,
    Arch,
    CapacityParams,
    GuardParams,
    with_capacity_base,
)

Positive = Annotated[float, Strict(), Field(gt=0)]
# A Locust run's start before its schedule, counted in planned times.
STARTUP_S = 3.0


class ClientParams(Table):
    """The job clients (experiments/load/job_client.py)."""

    poll_interval_s: Positive = 0.1
    deadline_s: Positive = 60.0
    # after a job step's schedule: the clients keep polling this long; a job not ended by then
    # is recorded "unfinished"
    drain_s: Float = Field(5.0, ge=0)
    # jobs one client process keeps going at once (each holds its slot from submit to
    # result); a submit that waits for a slot is counted and still timed from its schedule
    inflight_cap: Int = Field(2048, ge=1)
    # The long-poll variant (services/jobs.py ``?wait=``): each level is also sent to the queue
    # by clients whose polls wait up to wait_s for the job's end. Unset: no such steps.
    wait_s: Positive | None = None

    @model_validator(mode="after")
    def _polls_before_deadline(self) -> ClientParams:
        self.spec()  # a ValueError naming the bad value
        self.spec(wait=True)
        return self

    def spec(self, wait: bool = False) -> JobSpec:
        """The plain polling clients' spec, or (wait) the long-polling ones'."""
        return JobSpec(poll_interval_s=self.poll_interval_s, deadline_s=self.deadline_s,
                       wait_s=self.wait_s if wait else None)


class LevelParams(Table):
    """The offered loads, multiples of the in-line capacity, rising: each sent to the queue
    and to the in-line endpoint. The queue's capacity is read off these steps."""

    factors: tuple[Positive, ...] = Field(min_length=1)
    step_s: Positive
    # before a queue step: until no job waits, at most this long (then it starts anyway,
    # and its record says so)
    drain_max_s: Positive = 60.0
    # before an in-line step: probes until the idle latency is back (experiments/lab/recovery.py)
    recover_max_s: Positive = 60.0
    recover_tolerance: Float = Field(1.5, gt=1)

    @model_validator(mode="after")
    def _rising(self) -> LevelParams:
        if list(self.factors) != sorted(set(self.factors)):
            raise ValueError(f"factors = {list(self.factors)}: must rise, each once (the "
                             "queue's capacity is the last passing step before a failing one)")
        return self


class BurstParams(Table):
    """base x capacity for before_s, (factor - base) x capacity more for burst_s, then the
    base load for after_s, within which the queue must drain."""

    factor: Float = Field(3.0, gt=1)
    base: Positive = 0.5
    before_s: Positive
    burst_s: Positive
    after_s: Positive
    # drained: at most this many jobs wait again
    drain_depth: Int = Field(1, ge=0)

    @model_validator(mode="after")
    def _base_below_burst(self) -> BurstParams:
        if self.base >= self.factor:
            raise ValueError(f"base = {self.base:g}: must be below factor ({self.factor:g})")
        return self

    @property
    def run_s(self) -> float:
        return self.before_s + self.burst_s + self.after_s


class DepthParams(Table):
    interval_s: Positive = 1.0


class QueueConfig(Table):
    experiment: Str
    profile: Str
    description: Str = ""
    source: Str = ""
    architectures: tuple[Arch, ...] = Field(ARCHS, min_length=1)
    payload: tuple[Float, ...] = tuple(DEFAULT_PAYLOAD)
    capacity_rps: dict[Arch, Positive] = {}
    capacity_from: CapacityFrom | None = None
    # where each architecture's 1x came from; filled by load_queue, not read from TOML
    capacity_source: dict[str, Any] = {}
    client: ClientParams = ClientParams()
    levels: LevelParams
    burst: BurstParams
    depth: DepthParams = DepthParams()
    capacity: CapacityParams
    guard: GuardParams = GuardParams()

    @model_validator(mode="after")
    def _wait_within_request_timeout(self) -> QueueConfig:
        wait = self.client.wait_s
        if wait is not None and wait >= self.capacity.request_timeout_s:
            raise ValueError(f"client.wait_s = {wait:g}: must be below the clients' request "
                             f"timeout ({self.capacity.request_timeout_s:g} s), or every long "
                             "poll of a pending job would be cut as a failed request")
        return self

    @model_validator(mode="after")
    def _capacity_known(self) -> QueueConfig:
        missing = [a for a in self.architectures if a not in self.capacity_rps]
        if missing and self.capacity_from is None:
            raise ValueError(f"capacity_rps has no figure for {missing} and there is no "
                             "[capacity_from] to read it from")
        return self

    def with_measured_capacities(self, root: Path | None = None) -> QueueConfig:
        rps, source = settle_capacities(self.capacity_rps, self.capacity_from,
                                        self.architectures, root=root)
        return self.model_copy(update={"capacity_rps": rps, "capacity_source": source})

    @property
    def bound_ms(self) -> float:
        """The in-line endpoint's bound: the shared p99 bound."""
        return self.capacity.p99_bound_ms

    @property
    def job_bound_ms(self) -> float:
        """A job's time to result is judged against the shared bound plus one poll interval:
        a poller sees a result up to one interval after it is there."""
        return self.bound_ms + self.client.poll_interval_s * 1000

    @property
    def arch_s(self) -> float:
        """Planned load time of one architecture."""
        lv, b, c = self.levels, self.burst, self.client
        job_steps = 1 if c.wait_s is None else 2
        steps = len(lv.factors) * ((job_steps + 1) * (lv.step_s + STARTUP_S)
                                   + job_steps * c.drain_s + self.capacity.drain_s)
        return steps + 2 * (b.run_s + STARTUP_S) + c.drain_s + self.capacity.drain_s

    @property
    def total_s(self) -> float:
        return self.arch_s * len(self.architectures)

    def to_dict(self) -> dict[str, Any]:
        d = json.loads(self.model_dump_json())
        d["bound_ms"] = self.bound_ms
        d["job_bound_ms"] = self.job_bound_ms
        return d


_TOP = {"architectures", "request", "capacity_rps", "capacity_from", "client", "levels",
        "burst", "depth", "capacity", "guard"}


def parse_queue(data: dict, profile: str | None = None, *,
                source: str = "<experiment8>") -> QueueConfig:
    """Experiment 8's TOML through the one loader; [capacity] merged onto the shared capacity
    protocol (its bound, max_error_fraction and open-model keys are what this experiment
    takes from it)."""
    return parse(QueueConfig, with_capacity_base(data), profile, source=source, top=_TOP,
                 allowed=_TOP, flat={"request": {"payload"}})


def load_queue(path: str | Path, profile: str | None = None) -> QueueConfig:
    """The profile's config with its capacities settled (a missing or unclosed source run is
    a ConfigError naming it)."""
    cfg = parse_queue(read(path), profile, source=str(path))
    try:
        return cfg.with_measured_capacities()
    except ValueError as exc:
        raise ConfigError(f"{path} (profile {cfg.profile}): {exc}") from None
