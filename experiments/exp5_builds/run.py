"""Experiment 5's run: its points are ladder rungs (experiments/lab/ladder.py deploys,
verifies and measures each, restores the default build at the end), read from a ladder file
whose points each name the `sweep` they belong to. This module adds what makes that file a
set of sweeps, checked before anything is deployed.

    sweeps = load_sweeps("experiments/exp5_builds/config.toml", "quick")
"""

from __future__ import annotations

from pathlib import Path

from experiments.analysis.factors import Build, PairError, build_of, check_pair, path_steps
from experiments.config import ConfigError
from experiments.lab.ladder import run as run_points
from experiments.ladder import Ladder, Variant, load_ladder

__all__ = ["load_sweeps", "run_points"]


def check_sweeps(ladder: Ladder) -> Ladder:
    """A sweep varies one architecture's settings, around one build with no sweep (the
    default, which every sweep shares and which measures both architectures)."""
    base = [v for v in ladder.variants if not v.sweep]
    if len(base) != 1:
        raise ConfigError(f"{ladder.source}: variants: expected one point with no `sweep` (the "
                          f"build the sweeps share), got {[v.name for v in base] or 'none'}")
    for v in ladder.variants:
        if v.sweep and len(v.archs) != 1:
            raise ConfigError(f"{ladder.source}: variants.{v.name}: a point of sweep "
                              f"{v.sweep!r} measures one architecture, got archs = "
                              f"{list(v.archs)}")
    check_pairs(ladder)
    return ladder


def variant_build(v: Variant, arch: str) -> Build:
    """A rung's build as the pairs compare it: its envs read as the services read them, and
    the workers per core it asks of each service (None: the inventory's)."""
    return build_of(f"{v.name}/{arch}", arch,
                    {"model_api": v.model_api_env, "scoring_handler": v.scoring_handler_env},
                    {"model_api": v.model_api_workers_per_core,
                     "scoring_handler": v.scoring_handler_workers_per_core})


def check_pairs(ladder: Ladder) -> Ladder:
    """Every declared pair differs in its factor alone (experiments/analysis/factors.py says
    what that means), and every path walks declared pairs: a pair that does not is a config
    error naming it, before anything is deployed."""
    variants = {v.name: v for v in ladder.variants}

    def build(name: str) -> Build:
        variant, arch = name.rsplit("/", 1)
        return variant_build(variants[variant], arch)

    try:
        for p in ladder.pairs:
            check_pair(p.factor, build(p.a), build(p.b))
        for path in ladder.paths:
            path_steps(path, [p.model_dump() for p in ladder.pairs])
    except PairError as exc:
        raise ConfigError(f"{ladder.source}: {exc}") from None
    return ladder


def load_sweeps(path: str | Path, profile: str | None = None) -> Ladder:
    """The profile's points, once the whole file checks as a set of sweeps: a profile may then
    select a few points (`parser` measures the Redis-parser points beside their twins and
    leaves the default build out)."""
    check_sweeps(load_ladder(path))
    return load_ladder(path, profile)
