"""What a ladder is: rungs (variants of the default build, each a set of settings) measured
with one load protocol, as experiments 4, 5 and 6 declare them in their TOML: the protocol part
read by experiments/protocol.py, the [[variants]] and each profile's `variants` selection here.
Running a ladder: experiments/lab/ladder.py; analysing its folder: experiments/analysis/ladder.py.

    ladder = load_ladder("experiments/exp4_ladder/config.toml", "quick")
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from experiments.config import Checker, Float, Str, Table, parse_document, read
from experiments.constants import ARCHS, CAPACITY, LOAD_TEST, PROBE
from experiments.protocol import (
    PROFILE_KEYS,
    TOP_KEYS,
    Arch,
    Arrival,
    Protocol,
    protocol_from,
    with_capacity_base,
)
from experiments.repeats import abba
from services.settings import SettingsError, check_service_env


def model_service_of(model_server: str, archs: Iterable[str], arch: str) -> str:
    """The topology service an `arch` scoring handler of a rung calls: the rung's model server
    where it names one for that architecture (experiment 7's BentoML points), else its own
    model API. The run (its model probe) and the analysis (CPU per request) both ask here."""
    return model_server if model_server and arch in tuple(archs) else f"model-{arch}"


class Variant(Table):
    """One rung of the ladder: the default build with the settings it names."""

    name: Str
    description: Str = ""
    # The setting this rung varies, where rungs are points of sweeps (experiment 5's best
    # builds); "" for the ladder's rungs and for the default build every sweep shares.
    sweep: Str = ""
    archs: tuple[Arch, ...] = Field(ARCHS, min_length=1)
    arrivals: tuple[Arrival, ...] = Field(("spread",), min_length=1)
    model_api_env: dict[str, str] = {}
    scoring_handler_env: dict[str, str] = {}
    model_api_workers_per_core: Float | None = Field(None, gt=0)
    scoring_handler_workers_per_core: Float | None = Field(None, gt=0)

    def deploy_vars(self, services: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Extra vars of `ansible-playbook deploy.yml -e`: only what this variant changes
        (nothing for the default build, so the inventory's own settings apply). ``services``:
        the deployed topology's (experiments.lab.topology), whose CPU sets size the workers."""
        out: dict[str, Any] = {}
        if self.model_api_env:
            out["model_api_env"] = dict(self.model_api_env)
        if self.scoring_handler_env:
            out["scoring_handler_env"] = dict(self.scoring_handler_env)
        for role, per_core, service in (
                ("model_api", self.model_api_workers_per_core, "model-sync"),
                ("scoring_handler", self.scoring_handler_workers_per_core, "scoring-sync")):
            if per_core is not None:
                cores = len(services[service].get("cpus") or [0])
                out[f"{role}_workers"] = max(1, round(per_core * cores))
        return out

    def model_service(self, arch: str) -> str:
        """The topology service the rung's `arch` scoring handler calls (its model probe's)."""
        return model_service_of("", self.archs, arch)

    def prerequisite_vars(self, services: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        """Extra vars to deploy before `deploy_vars` can be known, or None: a rung that calls
        a service the deployed topology does not have yet (experiment 7's BentoML server)
        first deploys it, so its address comes from the topology that deploy writes."""
        return None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class Pair(Table):
    """Two builds ("<variant>/<arch>") said to differ in one factor (experiment 5's split of a
    gap, experiments/analysis/factors.py, which checks the claim): b against a."""

    factor: Str
    a: Str
    b: Str


@dataclass(frozen=True)
class Ladder:
    protocol: Protocol
    variants: tuple[Variant, ...]
    source: str
    # Declared pairs and paths of builds (experiment 5): those the profile's rungs measure.
    pairs: tuple[Pair, ...] = ()
    paths: tuple[tuple[str, ...], ...] = ()

    @property
    def experiment(self) -> str:
        return self.protocol.experiment

    @property
    def profile(self) -> str:
        return self.protocol.profile

    def runs(self, repeat: int = 1) -> list[tuple[Variant, str, str, str]]:
        """(variant, step, arch, arrival) in the order they run in `repeat` (1-based): the
        variants, and the architectures within each, reversed in even repeats (ABBA)."""
        out = []
        for v in abba(self.variants, repeat):
            archs = abba(v.archs, repeat)
            for arch in archs:
                out.append((v, "probe", arch, "spread"))
                if arch == "sync":
                    out.append((v, "probe-model", arch, "spread"))
            for arrival in v.arrivals:
                for arch in archs:
                    out.append((v, LOAD_TEST, arch, arrival))
            if self.has_capacity and "spread" in v.arrivals:
                # Spread rungs only: the open model has no users to synchronise into bursts,
                # so a bursty-only rung's search would repeat its spread twin's. After the
                # step load, whose throughput is where the search starts.
                out += [(v, CAPACITY, arch, "spread") for arch in archs]
        return out

    @property
    def has_capacity(self) -> bool:
        return any(s.name == CAPACITY for s in self.protocol.scenarios)

    @property
    def total_s(self) -> float:
        p = self.protocol
        per = {"probe": p.scenario(PROBE).total_s, "probe-model": p.scenario(PROBE).total_s,
               LOAD_TEST: p.scenario(LOAD_TEST).total_s}
        if self.has_capacity:
            per[CAPACITY] = p.scenario_s(p.scenario(CAPACITY))
        return sum(per[step] + p.pause_s for _, step, _, _ in self.runs()) * p.repeats

    def to_dict(self) -> dict[str, Any]:
        return {"variants": [v.to_dict() for v in self.variants], "source": self.source,
                # only where declared: a manifest without them is every earlier run's
                **({"pairs": [p.model_dump() for p in self.pairs]} if self.pairs else {}),
                **({"paths": [list(p) for p in self.paths]} if self.paths else {})}


def _env(c: Checker, where: str, table: Any) -> dict[str, str]:
    c.keys(table, where, set(table) if isinstance(table, dict) else set())
    for key, value in table.items():
        if not isinstance(value, str | int | float | bool):
            raise c.fail(where, f"{key} = {value!r}: expected a string, number or boolean")
    env = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in table.items()}
    try:  # a value the services would refuse stops the run here, not at its deploy
        check_service_env(env)
    except SettingsError as exc:
        raise c.fail(where, str(exc)) from None
    return env


def _variant(c: Checker, i: int, t: Any) -> Variant:
    c.keys(t, f"variants[{i}]", set(Variant.model_fields))
    where = f"variants.{c.string(t, f'variants[{i}]', 'name')}"
    envs = {key: _env(c, f"{where}.{key}", t.get(key, {}))
            for key in ("model_api_env", "scoring_handler_env")}
    return c.validate(Variant, {**t, **envs}, where)


def _builds(c: Checker, where: str, names: Any, variants: list[Variant]) -> list[str]:
    """Builds named "<variant>/<arch>", each a rung of the file that measures that arch."""
    known = {f"{v.name}/{arch}" for v in variants for arch in v.archs}
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise c.fail(where, f"expected builds named \"<variant>/<arch>\", got {names!r}")
    for x in names:
        if x not in known:
            raise c.fail(where, f"{x!r}: no such build (a variant's name / one of its archs)")
    return names


def _pairs(c: Checker, tables: Any, variants: list[Variant]) -> list[Pair]:
    if tables is None:
        return []
    if not isinstance(tables, list):
        raise c.fail("pairs", f"expected [[pairs]] tables, got {tables!r}")
    out = []
    for i, t in enumerate(tables):
        c.keys(t, f"pairs[{i}]", set(Pair.model_fields))
        pair = c.validate(Pair, t, f"pairs[{i}]")
        _builds(c, f"pairs[{i}]", [pair.a, pair.b], variants)
        out.append(pair)
    return out


def _paths(c: Checker, tables: Any, variants: list[Variant]) -> list[tuple[str, ...]]:
    if tables is None:
        return []
    if not isinstance(tables, list):
        raise c.fail("paths", f"expected [[paths]] tables, got {tables!r}")
    out = []
    for i, t in enumerate(tables):
        c.keys(t, f"paths[{i}]", {"builds"})
        builds = _builds(c, f"paths[{i}].builds", t.get("builds"), variants)
        if len(builds) < 2:
            raise c.fail(f"paths[{i}].builds", "a path needs two builds at least")
        out.append(tuple(builds))
    return out


def ladder_from(merged: dict, c: Checker, tables: Any, scenario_names: Any = None,
                pairs: Any = None, paths: Any = None) -> Ladder:
    """The Ladder of one resolved profile: every [[variants]] table (``tables``, the file's)
    checked, the profile's `variants` (names) selecting which rungs it runs, the protocol from
    the rest (protocol.protocol_from)."""
    if not isinstance(tables, list) or not tables:
        raise c.fail("variants", "no [[variants]] defined")
    variants = [_variant(c, i, t) for i, t in enumerate(tables)]
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise c.fail("variants", f"duplicate variant names in {names}")
    declared, routes = _pairs(c, pairs, variants), _paths(c, paths, variants)
    merged = dict(merged)
    chosen = merged.pop("variants", tables)
    if chosen != tables:  # the profile names the rungs it runs
        if not isinstance(chosen, list) or not chosen or not all(
                isinstance(x, str) for x in chosen):
            raise c.fail(f"profiles.{c.profile}", "variants: expected a non-empty list of names")
        unknown = [x for x in chosen if x not in names]
        if unknown:
            raise c.fail(f"profiles.{c.profile}", f"unknown variant {unknown[0]!r} "
                                                  f"(have: {', '.join(names)})")
        variants = [v for v in variants if v.name in chosen]
    protocol = protocol_from(merged, c, scenario_names)
    for needed in (PROBE, LOAD_TEST):
        try:
            protocol.scenario(needed)
        except KeyError:
            raise c.fail("scenarios", f"a ladder needs a scenario {needed!r}") from None
    if protocol.scenario(PROBE).kind != "constant" or protocol.scenario(PROBE).users != 1:
        raise c.fail("scenarios.probe", "the probe must be a constant scenario with users = 1")
    if protocol.scenario(LOAD_TEST).kind != "ramp":
        raise c.fail("scenarios.load_test", "the load test must be a ramp")
    if any(s.name == CAPACITY and s.kind != "capacity" for s in protocol.scenarios):
        raise c.fail("scenarios.capacity", "the capacity scenario must have kind = 'capacity'")
    run = {f"{v.name}/{arch}" for v in variants for arch in v.archs}
    return Ladder(protocol, tuple(variants), c.source,
                  tuple(p for p in declared if {p.a, p.b} <= run),
                  tuple(p for p in routes if set(p) <= run))


def parse_ladder(data: dict, profile: str | None = None, *, source: str = "<experiment4>",
                 check_all: bool = True) -> Ladder:
    """Validate a ladder's TOML (experiments 4, 5, 6) through the one loader
    (config.parse_document): the protocol's keys, [[variants]], and each profile's `variants`
    selection."""
    data = with_capacity_base(data)
    return parse_document(
        data, profile, source=source, top=TOP_KEYS | {"variants", "pairs", "paths"},
        allowed=PROFILE_KEYS | {"variants"}, check_all=check_all,
        build=lambda merged, c: ladder_from({k: v for k, v in merged.items()
                                             if k not in ("pairs", "paths")}, c,
                                            data.get("variants"), data.get("scenarios"),
                                            data.get("pairs"), data.get("paths")))


def load_ladder(path: str | Path, profile: str | None = None) -> Ladder:
    return parse_ladder(read(path), profile, source=str(path))
