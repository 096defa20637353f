"""The load protocol of experiments 3 and 4: scenarios (durations, loads), analysis and
guard parameters, read from the experiment's TOML into frozen, typed models.

A profile is a small override table (`[profiles.<name>...]`) deep-merged onto the base
tables (experiments/config.py); `full` is the file as written. Every key is validated and an
error names the file, the profile, the table and the offending key or value.

    protocol = load_protocol("experiments/exp3_load/config.toml", "quick")
    protocol.scenario("load_test").duration_s
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, TypeAdapter, ValidationError, model_validator

from experiments.config import (
    Checker,
    ConfigError,
    Float,
    Int,
    Str,
    Table,
    merge,
    parse_document,
    read,
)
from experiments.constants import ARCHS, ARRIVALS
from services.describe import predict_path

KINDS = ("constant", "ramp", "capacity", "open")
BREAKING_POINT = "breaking_point"
CAPACITY = "capacity"
DEFAULT_PAYLOAD = [5.1, 3.5, 1.4, 0.2]  # the original's curl examples
# The capacity search's shared protocol; an experiment's [capacity] overrides it key by key.
CAPACITY_BASE = Path(__file__).with_name("capacity.toml")
Arch = Literal[ARCHS]  # a value out of constants.ARCHS
Arrival = Literal[ARRIVALS]


class Scenario(Table):
    """One load scenario. Closed loop (each user sends one request per `pacing_s`, the next
    only after the answer): `constant` holds `users` (reached at `spawn_rate`/s) for
    `duration_s`; `ramp` goes from `start_users` by `step_users` every `step_interval_s` up to
    `end_users`, then holds `hold_s`. Open model (requests at scheduled times, whatever is in
    flight: experiments.load.arrivals): `open` holds `rate` arrivals/s for `duration_s`
    (rate "capacity": the capacity the same architecture's search found); `capacity` is the
    search for the capacity under a latency bound, parameters in the protocol's [capacity]."""

    name: Str
    kind: Literal["constant", "ramp", "capacity", "open"]
    pacing_s: Float = Field(1.0, gt=0)
    users: Int | None = Field(None, ge=1)  # constant; None while it awaits the breaking point
    users_from: Literal["breaking_point"] | None = None  # users come from the load test
    spawn_rate: Float = Field(1.0, gt=0)
    duration_s: Float = Field(0.0, ge=0)  # constant only; a ramp's follows from its steps
    start_users: Int = Field(1, ge=1)
    end_users: Int = Field(1, ge=1)
    step_users: Int = Field(1, ge=1)
    step_interval_s: Float = Field(1.0, gt=0)
    hold_s: Float = Field(0.0, ge=0)
    rate: Float | None = Field(None, gt=0)  # open; None while it awaits the capacity
    rate_from: Literal["capacity"] | None = None

    @property
    def needs_breaking_point(self) -> bool:
        return self.users_from == BREAKING_POINT and self.users is None

    @property
    def needs_capacity(self) -> bool:
        return self.rate_from == CAPACITY and self.rate is None

    @property
    def open_model(self) -> bool:
        return self.kind in ("open", "capacity")

    def with_rate(self, rate: float) -> Scenario:
        """The open scenario holding `rate` arrivals/s (resolves rate = "capacity")."""
        if self.kind != "open" or not rate > 0:
            raise ConfigError(f"scenario {self.name!r}: only an open scenario takes a rate "
                              f"> 0, got {rate!r}")
        return self.model_copy(update={"rate": float(rate)})

    @property
    def n_steps(self) -> int:
        if self.kind != "ramp":
            return 1
        return math.ceil((self.end_users - self.start_users) / self.step_users) + 1

    @property
    def total_s(self) -> float:
        """Planned length of the scenario in seconds (as the load shape runs it)."""
        if self.kind == "ramp":
            return self.n_steps * self.step_interval_s + self.hold_s
        return self.duration_s

    @property
    def max_users(self) -> int | None:
        return {"ramp": self.end_users, "constant": self.users}.get(self.kind)

    def with_users(self, users: int) -> Scenario:
        """The scenario holding `users` (used to resolve users = "breaking_point")."""
        if self.kind != "constant":
            raise ConfigError(f"scenario {self.name!r}: only a constant scenario takes users")
        if users < 1:
            raise ConfigError(f"scenario {self.name!r}: users must be >= 1, got {users}")
        return self.model_copy(update={"users": int(users)})

    def to_dict(self) -> dict[str, Any]:
        return {**self.model_dump(), "total_s": self.total_s}


class BreakingPointParams(Table):
    throughput_ratio: Float = Field(0.9, gt=0, le=1)
    min_deficit_rps: Float = Field(2.0, ge=0)
    noise_sigmas: Float = Field(2.0, ge=0)
    latency_factor: Float = Field(3.0, gt=1)
    latency_min_increase_ms: Float = Field(20.0, ge=0)
    error_rate: Float = Field(0.01, ge=0, le=1)
    smoothing_s: Int = Field(5, ge=1)
    sustain_s: Int = Field(5, ge=1)
    baseline_skip_s: Int = Field(2, ge=0)
    baseline_s: Int = Field(10, ge=1)
    lag_s: Float = Field(1.0, ge=0)


class AnalysisParams(Table):
    warmup_s: Float = Field(5.0, ge=0)
    alpha: Float = Field(0.05, gt=0, le=0.5)
    min_effect: Float = Field(0.02, ge=0)
    breaking_point: BreakingPointParams = BreakingPointParams()


class CapacityParams(Table):
    """The capacity search (experiments.analysis.capacity): one latency bound for every
    architecture, how each step is run, and where the search starts and stops."""

    p99_bound_ms: Float = Field(gt=0)  # the shared product requirement, absolute
    # also reported: capacity at p99 <= factor x the architecture's own 1-user p99 (0: not)
    relative_bound_factor: Float = Field(0.0, ge=0)
    max_error_fraction: Float = Field(0.01, ge=0, le=1)
    process: Literal["poisson", "constant"] = "poisson"
    seed: Int = 1
    start_rate: Float = Field(gt=0)
    min_rate: Float = Field(1.0, gt=0)
    max_rate: Float = Field(gt=0)
    growth: Float = Field(2.0, gt=1)
    precision: Float = Field(0.05, gt=0)
    max_steps: Int = Field(12, ge=1)
    min_step_s: Float = Field(gt=0)  # a step's schedule lasts at least this ...
    min_requests: Int = Field(500, ge=1)  # ... and long enough for this many arrivals,
    # but at most max_step_s (0: no cap): at a few req/s, min_requests would make steps of
    # minutes; a capped step's p99 rests on fewer requests, which its row in the report shows
    max_step_s: Float = Field(0.0, ge=0)
    drain_s: Float = Field(2.0, ge=0)
    # The capacity must also pass a hold of hold_s at its rate (0: no hold, as runs before
    # holds existed); at most max_holds holds per search (a failed hold lowers the bracket).
    hold_s: Float = Field(0.0, ge=0)
    max_holds: Int = Field(3, ge=1)
    # Before each step, wait up to recovery_max_s for the stack to answer probes within
    # recovery_tolerance x its idle latency (experiments/lab/recovery.py; 0: no wait, as runs
    # before waits existed).
    recovery_max_s: Float = Field(0.0, ge=0)
    recovery_tolerance: Float = Field(1.5, gt=1)
    # ... and after a failed step, first recovery_quiet_s without any load
    recovery_quiet_s: Float = Field(0.0, ge=0)
    inflight_cap: Int = Field(512, ge=1)
    request_timeout_s: Float = Field(10.0, gt=0)
    max_loadgen_cpu_fraction: Float = Field(0.5, gt=0, le=1)
    min_achieved_fraction: Float = Field(0.95, gt=0, le=1)
    # Trust (issue 21). Each defaults to what runs before it did, so their replays stay as
    # recorded. confidence > 0: a step's p99 is judged with a binomial confidence interval
    # (experiments/analysis/tail.py); an undecided step is measured again for up to
    # extend_max_s (0: not), and still undecided it counts as not passed.
    confidence: Float = Field(0.0, ge=0, lt=1)
    extend_max_s: Float = Field(0.0, ge=0)
    # budget_s > 0: a search spends at most this many seconds of load, holds are not counted
    # against max_holds, and a failed hold is followed by holds that bisect to the precision.
    budget_s: Float = Field(0.0, ge=0)
    # "per_repeat": repeat k's schedules draw from seed_of(seed, k), the same for every
    # architecture and step of that repeat (common random numbers); "fixed": every schedule
    # from `seed` (runs before this).
    seeds: Literal["fixed", "per_repeat"] = "fixed"
    # A Poisson schedule with exactly round(rate x duration) arrivals (a Poisson process
    # conditioned on its count: uniform times), so a step offers its nominal rate; False: the
    # count is random too (a 200-request step may offer 10 % more or less).
    nominal_count: bool = False
    # The proof (experiment 3's max-performance run at the capacity found) that fails (or is
    # undecided) counts as a failed hold at that rate and the search goes on below it, then a
    # new proof at the new capacity; at most max_proofs proofs, after which the capacity is a
    # lower bound. False: a failed proof is only reported (runs before this).
    proof_search_on: bool = False
    max_proofs: Int = Field(2, ge=1)

    @model_validator(mode="after")
    def _rates_in_order(self) -> CapacityParams:
        if not self.min_rate <= self.start_rate <= self.max_rate:
            raise ValueError(f"need min_rate ({self.min_rate:g}) <= start_rate "
                             f"({self.start_rate:g}) <= max_rate ({self.max_rate:g})")
        if self.extend_max_s and self.extend_max_s < max(self.hold_s, self.min_step_s):
            raise ValueError(f"extend_max_s ({self.extend_max_s:g}) must be 0 (no extension) "
                             f"or at least hold_s and min_step_s: an extension is longer")
        if self.extend_max_s and not self.confidence:
            raise ValueError("extend_max_s needs confidence > 0: only a confidence verdict "
                             "can be undecided")
        if self.proof_search_on and not self.hold_s:
            raise ValueError("proof_search_on needs hold_s > 0: the search goes on below a "
                             "failed proof in holds")
        if self.max_step_s and self.max_step_s < self.min_step_s:
            raise ValueError(f"max_step_s ({self.max_step_s:g}) must be 0 (no cap) or at least "
                             f"min_step_s ({self.min_step_s:g})")
        return self

    def seed_of(self, repeat: int) -> int:
        """The schedules' seed in repeat `repeat` (1-based)."""
        return self.seed if self.seeds == "fixed" else seed_of(self.seed, repeat)

    @property
    def planned_s(self) -> float:
        """An upper estimate of one search's load time (each step plus start-up)."""
        if self.budget_s:
            # the budget, and the step that crosses it: at most a hold or an extension long
            return self.budget_s + max(self.hold_s, self.extend_max_s, self.max_step_s)
        holds = self.max_holds * (self.hold_s + self.drain_s + 5.0) if self.hold_s else 0.0
        return self.max_steps * (self.min_step_s + self.drain_s + 5.0) + holds


def seed_of(base: int, repeat: int) -> int:
    """A repeat's own seed, derived from the protocol's seed and the repeat number (recorded
    in each step's result.json): repeats sample different arrival paths, reproducibly."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    return int(np.random.SeedSequence([base, repeat]).generate_state(1)[0])


class GuardParams(Table):
    interval_s: Float = Field(1.0, gt=0)
    threshold: Float = Field(0.8, gt=0, le=1)
    sustain_s: Float = Field(3.0, ge=0)
    grace_s: Float = Field(3.0, ge=0)


class Protocol(Table):
    experiment: Str
    profile: Str
    description: Str = ""
    arrival: Arrival = "spread"
    architectures: tuple[Arch, ...] = Field(ARCHS, min_length=1)
    payload: tuple[Float, ...] = tuple(DEFAULT_PAYLOAD)
    scenarios: tuple[Scenario, ...] = Field(min_length=1)
    analysis: AnalysisParams = AnalysisParams()
    guard: GuardParams = GuardParams()
    capacity: CapacityParams | None = None
    pause_s: Float = Field(0.0, ge=0)  # rest between two Locust runs
    # Whole runs of every scenario, architectures alternated (ABBA) and the services restarted
    # between them (experiments/repeats.py), so the reports' spread includes run-to-run state.
    repeats: Int = Field(1, ge=1)
    source: Str = ""

    @property
    def paths(self) -> dict[str, str]:
        """Architecture -> the scoring path (services.describe owns it)."""
        return {arch: predict_path(arch) for arch in self.architectures}

    def scenario(self, name: str) -> Scenario:
        for s in self.scenarios:
            if s.name == name:
                return s
        raise KeyError(f"no scenario {name!r}; have {[s.name for s in self.scenarios]}")

    def scenario_s(self, scenario: Scenario) -> float:
        """Planned load time of one scenario on one architecture (a capacity search counted
        at its upper estimate)."""
        if scenario.kind == "capacity" and self.capacity is not None:
            return self.capacity.planned_s
        return scenario.total_s

    @property
    def repeat_s(self) -> float:
        """Planned load time of one repeat: all scenarios on all architectures
        (breaking-point scenarios counted at their planned duration)."""
        return sum(self.scenario_s(s) for s in self.scenarios) * len(self.paths)

    @property
    def total_s(self) -> float:
        """Planned load time of the whole run, every repeat included."""
        return self.repeat_s * self.repeats

    def to_dict(self) -> dict[str, Any]:
        """The resolved protocol, for the manifest."""
        return {
            "experiment": self.experiment,
            "profile": self.profile,
            "description": self.description,
            "arrival": self.arrival,
            "paths": dict(self.paths),
            "payload": list(self.payload),
            "scenarios": [s.to_dict() for s in self.scenarios],
            "analysis": self.analysis.model_dump(),
            "guard": self.guard.model_dump(),
            **({"capacity": self.capacity.model_dump()} if self.capacity else {}),
            "pause_s": self.pause_s,
            "repeats": self.repeats,
            "source": self.source,
        }


# --------------------------------------------------------------------------- reading

# The keys of a scenario table, per kind: a discriminated union on `kind`, each kind's table
# with the keys it takes (those without a default it cannot do without), unknown keys refused.
# The values' types and ranges are Scenario's.
class _ConstantKeys(Table):
    kind: Literal["constant"]
    users: Any
    spawn_rate: Any
    duration_s: Any
    pacing_s: Any = None


class _RampKeys(Table):
    kind: Literal["ramp"]
    start_users: Any
    end_users: Any
    step_users: Any
    step_interval_s: Any
    hold_s: Any = None
    pacing_s: Any = None


class _CapacityKeys(Table):
    kind: Literal["capacity"]


class _OpenKeys(Table):
    kind: Literal["open"]
    rate: Any
    duration_s: Any


_SCENARIO_KINDS: TypeAdapter = TypeAdapter(Annotated[
    _ConstantKeys | _RampKeys | _CapacityKeys | _OpenKeys, Field(discriminator="kind")])
TOP_KEYS = frozenset({"pause_s", "repeats", "arrival", "architectures", "request", "scenarios",
                       "analysis", "guard", "capacity"})
PROFILE_KEYS = frozenset({"arrival", "pause_s", "repeats", "request", "scenarios", "analysis",
                           "guard", "capacity"})


def _scenario_keys(c: Checker, where: str, t: dict) -> None:
    """The table's keys against its kind's, the first error named."""
    try:
        _SCENARIO_KINDS.validate_python(t)
    except ValidationError as exc:
        e = exc.errors()[0]
        if e["type"] == "union_tag_not_found":
            raise c.fail(where, "missing key 'kind'") from None
        if e["type"] == "union_tag_invalid":
            raise c.fail(where, f"kind = {t['kind']!r}: expected one of "
                                f"{', '.join(KINDS)}") from None
        raise c.error({**e, "loc": e["loc"][1:]}, where) from None  # loc[0] is the kind


def _scenario(c: Checker, name: str, t: Any) -> Scenario:
    where = f"scenarios.{name}"
    if not isinstance(t, dict):
        raise c.fail(where, f"expected a table, got {t!r}")
    _scenario_keys(c, where, t)
    kind = t["kind"]
    fields = {**t, "name": name}
    if t.get("users") == BREAKING_POINT:
        fields.update(users=None, users_from=BREAKING_POINT)
    elif isinstance(t.get("users"), str):
        raise c.fail(where, f"users = {t['users']!r}: expected an integer or "
                            f"{BREAKING_POINT!r}")
    if t.get("rate") == CAPACITY:
        fields.update(rate=None, rate_from=CAPACITY)
    elif isinstance(t.get("rate"), str):
        raise c.fail(where, f"rate = {t['rate']!r}: expected a number or {CAPACITY!r}")
    if kind in ("constant", "open") and t["duration_s"] == 0:
        raise c.fail(where, "duration_s = 0: must be > 0")
    scenario = c.validate(Scenario, fields, where)
    if scenario.end_users < scenario.start_users:
        raise c.fail(where, f"end_users = {scenario.end_users}: must be >= start_users "
                            f"({scenario.start_users})")
    return scenario


def protocol_from(merged: dict, c: Checker, scenario_names: Any = None) -> Protocol:
    """The Protocol of one resolved profile (``merged``: the base tables with the profile's
    overrides, experiments.config.resolve). ``scenario_names``: the file's own scenarios, which
    a profile may change but not add to."""
    merged = dict(merged)
    added = sorted(set(merged.get("scenarios") or {}) - set(scenario_names or {}))
    if scenario_names is not None and added:
        raise c.fail(f"profiles.{c.profile}.scenarios", f"unknown scenario {added[0]!r}")
    request = c.keys(merged.pop("request", {}), "request", {"payload"})
    tables = merged.pop("scenarios", {})
    if not isinstance(tables, dict) or not tables:
        raise c.fail("scenarios", "no scenario defined")
    scenarios = tuple(_scenario(c, name, t) for name, t in tables.items())
    searched = False
    for s in scenarios:
        if s.open_model and "capacity" not in merged:
            raise c.fail(f"scenarios.{s.name}", f"a {s.kind} scenario needs the [capacity] "
                                                "table (bound, arrival process, step lengths)")
        searched = searched or s.kind == "capacity"
        if s.needs_capacity and not searched:
            raise c.fail(f"scenarios.{s.name}", "rate = 'capacity' needs a capacity scenario "
                                                "before it")
    fields = {k: v for k, v in merged.items() if k not in ("format_version", "default_profile")}
    return c.validate(Protocol, {**fields, **request, "scenarios": scenarios,
                                 "profile": c.profile, "source": c.source}, "top level")


def with_capacity_base(data: dict) -> dict:
    """``data`` with its [capacity] table merged onto the shared capacity protocol
    (CAPACITY_BASE): the file's table holds only what the experiment changes. A file with no
    [capacity] table searches nothing and takes nothing from the base."""
    if not isinstance(data.get("capacity"), dict):
        return data
    return {**data, "capacity": merge(read(CAPACITY_BASE), data["capacity"])}


def parse_protocol(data: dict, profile: str | None = None, *, source: str = "<protocol>",
                   check_all: bool = True) -> Protocol:
    """Validate a parsed TOML document and resolve `profile` (default: its default_profile).
    With check_all, every other profile is resolved too, so a typo in any profile fails."""
    data = with_capacity_base(data)
    return parse_document(data, profile, source=source, top=TOP_KEYS, allowed=PROFILE_KEYS,
                          build=lambda merged, c: protocol_from(merged, c, data.get("scenarios")),
                          check_all=check_all)


def load_protocol(path: str | Path, profile: str | None = None) -> Protocol:
    """Read and validate a protocol TOML file; `profile` None means its default_profile."""
    return parse_protocol(read(path), profile, source=str(path))
