"""Experiment 6's run: the crossover sweeps as a ladder of points, each a ladder rung
(experiments/lab/ladder.py deploys, verifies and measures it, both architectures at once,
and restores the default build at the end).

A point is one value of one factor, with one tier of builds (`default`: the lab's build;
`best`: each architecture's best build, one deploy serving both since each stack ignores the
other's switches); every other factor stays at the services' default. The baseline, every
factor at its default, is measured once per tier and shared by all factors. Which setting a
factor turns is a fact of the services, so it lives here (FACTORS), with the defaults read from
services/settings.py; the config chooses values, tiers and builds.

    crossover = load_crossover("experiments/exp6_crossover/config.toml", "quick")
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.config import Checker, parse_document, read
from experiments.lab.ladder import run as run_points
from experiments.ladder import Ladder, ladder_from
from experiments.protocol import PROFILE_KEYS, TOP_KEYS, with_capacity_base
from services.settings import declared_defaults

__all__ = ["FACTORS", "Crossover", "crossover_from", "load_crossover", "parse_crossover",
           "run_points"]

_DEFAULTS = declared_defaults()
# The default model latency: the middle of the services' uniform sleep range (40-50 ms).
_LATENCY_MS = (_DEFAULTS.sleep_min_s + _DEFAULTS.sleep_max_s) / 2 * 1000
_SPREAD = (_DEFAULTS.sleep_max_s - _DEFAULTS.sleep_min_s) / (_DEFAULTS.sleep_min_s
                                                             + _DEFAULTS.sleep_max_s)


@dataclass(frozen=True)
class Factor:
    """One factor of the sweeps: its unit, which service's env it sets, how, and its default
    (the value at which the point is the baseline)."""

    unit: str
    role: str  # "model_api" or "scoring_handler": whose env the value goes into
    env: Callable[[float], dict[str, str]]
    default: float
    integer: bool = False
    what: str = ""


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.6g}"


FACTORS: dict[str, Factor] = {
    "model_cpu_ms": Factor(
        "ms", "model_api", lambda v: {"SCORING_LAB_CPU_BURN_S": _seconds(v)},
        _DEFAULTS.cpu_burn_s * 1000, what="CPU per prediction in the model API"),
    # the default's relative spread kept: 45 ms is 40-50 ms, 400 ms is 356-444 ms
    "model_latency_ms": Factor(
        "ms", "model_api",
        lambda v: {"SCORING_LAB_SLEEP_MIN_S": _seconds(v * (1 - _SPREAD)),
                   "SCORING_LAB_SLEEP_MAX_S": _seconds(v * (1 + _SPREAD))},
        _LATENCY_MS, what="model latency (the model API's wait per prediction)"),
    "model_calls": Factor(
        "calls", "scoring_handler", lambda v: {"SCORING_LAB_MODEL_CALLS": f"{int(v)}"},
        _DEFAULTS.model_calls, integer=True, what="model calls per scoring request"),
    "handler_cpu_ms": Factor(
        "ms", "scoring_handler", lambda v: {"SCORING_LAB_HANDLER_CPU_S": _seconds(v)},
        _DEFAULTS.handler_cpu_s * 1000, what="CPU per request in the scoring handler"),
}
TIERS = ("default", "best")
_KEYS = {"tiers", "threshold", "builds", "factors"}
_BUILD_KEYS = {"description", "model_api_env", "scoring_handler_env"}


@dataclass(frozen=True)
class Crossover(Ladder):
    """The ladder of points, and what each point is: {variant name: {factor, value, tier}}
    (factor "" for a baseline), the tiers, the factors' values and the threshold of the
    "advantage falls below" rule. Recorded in the manifest with the ladder."""

    points: dict[str, dict[str, Any]] | None = None
    tiers: tuple[str, ...] = ()
    factors: dict[str, tuple[float, ...]] | None = None
    threshold: float = 0.10

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "crossover": {
            "points": self.points, "tiers": list(self.tiers), "threshold": self.threshold,
            "factors": {name: {"values": list(values), "default": FACTORS[name].default,
                               "unit": FACTORS[name].unit, "what": FACTORS[name].what}
                        for name, values in (self.factors or {}).items()}}}


def _label(value: float) -> str:
    return f"{value:g}"


def _point_name(factor: str, value: float, tier: str) -> str:
    return f"{factor}-{_label(value)}-{tier}"


def _table(c: Checker, where: str, x: Any) -> dict:
    if not isinstance(x, dict):
        raise c.fail(where, f"expected a table, got {x!r}")
    return x


def _values(c: Checker, name: str, raw: Any) -> tuple[float, ...]:
    where = f"crossover.factors.{name}"
    if name not in FACTORS:
        raise c.fail(where, f"unknown factor (have: {', '.join(FACTORS)})")
    factor = FACTORS[name]
    if not isinstance(raw, list):
        raise c.fail(where, f"expected a list of values, got {raw!r}")
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise c.fail(where, f"{v!r}: expected a number >= 0 ({factor.unit})")
        if factor.integer and v != int(v):
            raise c.fail(where, f"{v!r}: expected a whole number of {factor.unit}")
    if len(set(raw)) != len(raw):
        raise c.fail(where, f"duplicate values in {raw}")
    return tuple(sorted(float(v) for v in raw))


def _variants(c: Checker, table: dict) -> tuple[list[dict], dict, tuple[str, ...], dict]:
    """The [[variants]] the ladder's parser reads, and what each point is."""
    tiers = table.get("tiers", list(TIERS))
    if (not isinstance(tiers, list) or not tiers or any(t not in TIERS for t in tiers)
            or len(set(tiers)) != len(tiers)):
        raise c.fail("crossover.tiers", f"{tiers!r}: expected distinct names among {TIERS}")
    builds = _table(c, "crossover.builds", table.get("builds", {}))
    for tier, build in builds.items():
        if tier not in TIERS:
            raise c.fail(f"crossover.builds.{tier}", f"unknown tier (have: {', '.join(TIERS)})")
        c.keys(build, f"crossover.builds.{tier}", _BUILD_KEYS)
    if "best" in tiers and "best" not in builds:
        raise c.fail("crossover.builds", "tier 'best' needs [crossover.builds.best]")
    factors = {name: _values(c, name, raw)
               for name, raw in _table(c, "crossover.factors", table.get("factors", {})).items()}
    factors = {name: values for name, values in factors.items() if values}
    if not factors:
        raise c.fail("crossover.factors", "no factor with values to sweep")
    variants, points = [], {}
    for tier in tiers:
        build = builds.get(tier, {})
        base_env = {role: dict(build.get(f"{role}_env", {}))
                    for role in ("model_api", "scoring_handler")}
        name = f"baseline-{tier}"
        variants.append({"name": name, "description": f"every factor at its default, {tier} "
                         f"builds{': ' + build['description'] if build.get('description') else ''}",
                         **{f"{r}_env": e for r, e in base_env.items() if e}})
        points[name] = {"factor": "", "value": None, "tier": tier}
        for fname, values in factors.items():
            factor = FACTORS[fname]
            for value in values:
                if value == factor.default:
                    continue  # the baseline is this point
                env = copy.deepcopy(base_env)
                env[factor.role].update(factor.env(value))
                name = _point_name(fname, value, tier)
                variants.append({"name": name, "sweep": fname,
                                 "description": f"{factor.what} {_label(value)} {factor.unit}, "
                                                f"{tier} builds",
                                 **{f"{r}_env": e for r, e in env.items() if e}})
                points[name] = {"factor": fname, "value": value, "tier": tier}
    return variants, points, tuple(tiers), factors


def crossover_from(merged: dict, c: Checker, scenario_names: Any = None) -> Crossover:
    """The Crossover of one resolved profile: its [crossover] (the profile's overrides merged
    in by the loader) made into points, the ladder and protocol from the rest."""
    merged = dict(merged)
    table = _table(c, "crossover", merged.pop("crossover", None) or {})
    c.keys(table, "crossover", _KEYS)
    variants, points, tiers, factors = _variants(c, table)
    threshold = table.get("threshold", 0.10)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not (
            0 < threshold < 1):
        raise c.fail("crossover.threshold", f"{threshold!r}: expected a fraction in (0, 1)")
    ladder = ladder_from({**merged, "variants": variants}, c, variants, scenario_names)
    return Crossover(ladder.protocol, ladder.variants, ladder.source, points=points,
                     tiers=tiers, factors=factors, threshold=float(threshold))


def parse_crossover(data: dict, profile: str | None = None, *,
                    source: str = "<experiment6>") -> Crossover:
    """Validate experiment 6's TOML through the one loader (config.parse_document): [crossover]
    (a profile's [profiles.<name>.crossover] merged onto it like any other table) here, the
    generated points and the protocol by the ladder's (experiments/ladder.py)."""
    if "variants" in data:
        raise Checker(source).fail("variants", "experiment 6 makes its points from "
                                               "[crossover]; no [[variants]] here")
    data = with_capacity_base(data)
    return parse_document(
        data, profile, source=source, top=TOP_KEYS | {"crossover"},
        allowed=PROFILE_KEYS | {"crossover"},
        build=lambda merged, c: crossover_from(merged, c, data.get("scenarios")))


def load_crossover(path: str | Path, profile: str | None = None) -> Crossover:
    return parse_crossover(read(path), profile, source=str(path))
