"""Experiment protocols: a TOML file (durations, loads, analysis parameters, profiles) read
into frozen dataclasses.

A profile is a small override table (`[profiles.<name>...]`) deep-merged onto the base
tables; `full` is the file as written. Every key is validated and an error names the file,
the table and the offending key or value.

    protocol = load_protocol("experiments/exp3_load/config.toml", "quick")
    protocol.scenario("load_test").duration_s
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.config import (
    HEADER_KEYS,
    Checker,
    ConfigError,
    check_every_profile,
    read,
    resolve,
)
from experiments.constants import ARCHS, ARRIVALS
from services.describe import predict_path

KINDS = ("constant", "ramp")
BREAKING_POINT = "breaking_point"
DEFAULT_PAYLOAD = [5.1, 3.5, 1.4, 0.2]  # the original's curl examples


@dataclass(frozen=True)
class Scenario:
    """One load scenario. `constant`: hold `users` (reached at `spawn_rate`/s) for
    `duration_s`. `ramp`: `start_users` + `step_users` every `step_interval_s` up to
    `end_users`, then `hold_s`. Each user sends one request per `pacing_s`."""

    name: str
    kind: str
    pacing_s: float = 1.0
    users: int | None = None  # constant; None while it awaits the breaking point
    users_from: str | None = None  # "breaking_point" when users come from the load test
    spawn_rate: float = 1.0
    duration_s: float = 0.0  # constant only; a ramp's duration follows from its steps
    start_users: int = 1
    end_users: int = 1
    step_users: int = 1
    step_interval_s: float = 1.0
    hold_s: float = 0.0

    @property
    def needs_breaking_point(self) -> bool:
        return self.users_from == BREAKING_POINT and self.users is None

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
        return self.end_users if self.kind == "ramp" else self.users

    def with_users(self, users: int) -> Scenario:
        """The scenario holding `users` (used to resolve users = "breaking_point")."""
        if self.kind != "constant":
            raise ConfigError(f"scenario {self.name!r}: only a constant scenario takes users")
        if users < 1:
            raise ConfigError(f"scenario {self.name!r}: users must be >= 1, got {users}")
        return dataclasses.replace(self, users=int(users))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["total_s"] = self.total_s
        return d


@dataclass(frozen=True)
class BreakingPointParams:
    throughput_ratio: float = 0.9
    min_deficit_rps: float = 2.0
    noise_sigmas: float = 2.0
    latency_factor: float = 3.0
    latency_min_increase_ms: float = 20.0
    error_rate: float = 0.01
    smoothing_s: int = 5
    sustain_s: int = 5
    baseline_skip_s: int = 2
    baseline_s: int = 10
    lag_s: float = 1.0


@dataclass(frozen=True)
class AnalysisParams:
    warmup_s: float = 5.0
    alpha: float = 0.05
    min_effect: float = 0.02
    breaking_point: BreakingPointParams = BreakingPointParams()


@dataclass(frozen=True)
class GuardParams:
    interval_s: float = 1.0
    threshold: float = 0.8
    sustain_s: float = 3.0
    grace_s: float = 3.0


@dataclass(frozen=True)
class Protocol:
    experiment: str
    profile: str
    description: str
    arrival: str
    architectures: tuple[str, ...]
    payload: tuple[float, ...]
    scenarios: tuple[Scenario, ...]
    analysis: AnalysisParams
    guard: GuardParams
    pause_s: float = 0.0  # rest between two Locust runs
    source: str = ""

    @property
    def paths(self) -> dict[str, str]:
        """Architecture -> the scoring path (services.describe owns it)."""
        return {arch: predict_path(arch) for arch in self.architectures}

    def scenario(self, name: str) -> Scenario:
        for s in self.scenarios:
            if s.name == name:
                return s
        raise KeyError(f"no scenario {name!r}; have {[s.name for s in self.scenarios]}")

    @property
    def total_s(self) -> float:
        """Planned load time for all scenarios and architectures (breaking-point scenarios
        counted at their planned duration)."""
        return sum(s.total_s for s in self.scenarios) * len(self.paths)

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
            "analysis": dataclasses.asdict(self.analysis),
            "guard": dataclasses.asdict(self.guard),
            "pause_s": self.pause_s,
            "source": self.source,
        }


# --------------------------------------------------------------------------- validation

_SCENARIO_KEYS = {
    "constant": {"kind", "users", "spawn_rate", "duration_s", "pacing_s"},
    "ramp": {
        "kind",
        "start_users",
        "end_users",
        "step_users",
        "step_interval_s",
        "hold_s",
        "pacing_s",
    },
}
_TOP_KEYS = HEADER_KEYS | {"pause_s", "arrival", "architectures", "request", "scenarios",
                           "analysis", "guard"}
_PROFILE_KEYS = {"arrival", "pause_s", "request", "scenarios", "analysis", "guard"}


def _scenario(c: Checker, name: str, t: Any) -> Scenario:
    where = f"scenarios.{name}"
    if not isinstance(t, dict):
        raise c.fail(where, f"expected a table, got {t!r}")
    kind = c.string(t, where, "kind", choices=KINDS)
    c.keys(t, where, _SCENARIO_KEYS[kind])
    pacing = c.number(t, where, "pacing_s", default=1.0, lo=0, lo_open=True)
    if kind == "ramp":
        start = c.number(t, where, "start_users", lo=1, integer=True)
        end = c.number(t, where, "end_users", lo=1, integer=True)
        if end < start:
            raise c.fail(where, f"end_users = {end}: must be >= start_users ({start})")
        return Scenario(
            name=name,
            kind=kind,
            pacing_s=pacing,
            start_users=start,
            end_users=end,
            step_users=c.number(t, where, "step_users", lo=1, integer=True),
            step_interval_s=c.number(t, where, "step_interval_s", lo=0, lo_open=True),
            hold_s=c.number(t, where, "hold_s", default=0.0, lo=0),
        )
    users = t.get("users")
    users_from = None
    if users == BREAKING_POINT:
        users, users_from = None, BREAKING_POINT
    elif isinstance(users, str):
        raise c.fail(where, f"users = {users!r}: expected an integer or {BREAKING_POINT!r}")
    else:
        users = c.number(t, where, "users", lo=1, integer=True)
    return Scenario(
        name=name,
        kind=kind,
        pacing_s=pacing,
        users=users,
        users_from=users_from,
        spawn_rate=c.number(t, where, "spawn_rate", lo=0, lo_open=True),
        duration_s=c.number(t, where, "duration_s", lo=0, lo_open=True),
    )


def _breaking_point(c: Checker, t: dict) -> BreakingPointParams:
    w = "analysis.breaking_point"
    fields = {f.name for f in dataclasses.fields(BreakingPointParams)}
    c.keys(t, w, fields)
    d = BreakingPointParams()
    return BreakingPointParams(
        throughput_ratio=c.number(
            t, w, "throughput_ratio", default=d.throughput_ratio, lo=0, lo_open=True, hi=1
        ),
        min_deficit_rps=c.number(t, w, "min_deficit_rps", default=d.min_deficit_rps, lo=0),
        noise_sigmas=c.number(t, w, "noise_sigmas", default=d.noise_sigmas, lo=0),
        latency_factor=c.number(
            t, w, "latency_factor", default=d.latency_factor, lo=1, lo_open=True
        ),
        latency_min_increase_ms=c.number(
            t, w, "latency_min_increase_ms", default=d.latency_min_increase_ms, lo=0
        ),
        error_rate=c.number(t, w, "error_rate", default=d.error_rate, lo=0, hi=1),
        smoothing_s=c.number(t, w, "smoothing_s", default=d.smoothing_s, lo=1, integer=True),
        sustain_s=c.number(t, w, "sustain_s", default=d.sustain_s, lo=1, integer=True),
        baseline_skip_s=c.number(
            t, w, "baseline_skip_s", default=d.baseline_skip_s, lo=0, integer=True
        ),
        baseline_s=c.number(t, w, "baseline_s", default=d.baseline_s, lo=1, integer=True),
        lag_s=c.number(t, w, "lag_s", default=d.lag_s, lo=0),
    )


def _analysis(c: Checker, t: Any) -> AnalysisParams:
    c.keys(t, "analysis", {"warmup_s", "alpha", "min_effect", "breaking_point"})
    d = AnalysisParams()
    return AnalysisParams(
        warmup_s=c.number(t, "analysis", "warmup_s", default=d.warmup_s, lo=0),
        alpha=c.number(t, "analysis", "alpha", default=d.alpha, lo=0, lo_open=True, hi=0.5),
        min_effect=c.number(t, "analysis", "min_effect", default=d.min_effect, lo=0),
        breaking_point=_breaking_point(c, t.get("breaking_point", {})),
    )


def guard_params(c: Checker, t: Any) -> GuardParams:
    c.keys(t, "guard", {f.name for f in dataclasses.fields(GuardParams)})
    d = GuardParams()
    return GuardParams(
        interval_s=c.number(t, "guard", "interval_s", default=d.interval_s, lo=0, lo_open=True),
        threshold=c.number(t, "guard", "threshold", default=d.threshold, lo=0, lo_open=True, hi=1),
        sustain_s=c.number(t, "guard", "sustain_s", default=d.sustain_s, lo=0),
        grace_s=c.number(t, "guard", "grace_s", default=d.grace_s, lo=0),
    )


def parse_protocol(data: dict, profile: str | None = None, *, source: str = "<protocol>",
                   check_all: bool = True) -> Protocol:
    """Validate a parsed TOML document and resolve `profile` (default: its default_profile).
    With check_all, every other profile is resolved too, so a typo in any profile fails."""
    c = Checker(source)
    c.keys(data, "top level", _TOP_KEYS)
    merged, profile = resolve(data, profile, source=source, allowed=_PROFILE_KEYS)
    c = Checker(source, profile)
    for name in (data.get("profiles", {}).get(profile) or {}).get("scenarios", {}):
        if name not in data.get("scenarios", {}):
            raise c.fail(f"profiles.{profile}.scenarios", f"unknown scenario {name!r}")
    request = c.keys(merged.get("request", {}), "request", {"payload"})
    scen_tables = merged.get("scenarios", {})
    if not isinstance(scen_tables, dict) or not scen_tables:
        raise c.fail("scenarios", "no scenario defined")
    scenarios = tuple(_scenario(c, name, t) for name, t in scen_tables.items())
    if check_all:
        check_every_profile(
            data, lambda other: parse_protocol(data, other, source=source, check_all=False),
            profile)
    return Protocol(
        experiment=c.string(merged, "top level", "experiment"),
        profile=profile,
        description=c.string(merged, "top level", "description", default=""),
        arrival=c.string(merged, "top level", "arrival", default="spread", choices=ARRIVALS),
        architectures=c.names(merged, "top level", "architectures", ARCHS),
        payload=c.numbers(request, "request", "payload", DEFAULT_PAYLOAD),
        scenarios=scenarios,
        analysis=_analysis(c, merged.get("analysis", {})),
        pause_s=c.number(merged, "top level", "pause_s", default=0.0, lo=0),
        guard=guard_params(c, merged.get("guard", {})),
        source=source,
    )


def load_protocol(path: str | Path, profile: str | None = None) -> Protocol:
    """Read and validate a protocol TOML file; `profile` None means its default_profile."""
    return parse_protocol(read(path), profile, source=str(path))
