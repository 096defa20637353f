"""Where an experiment's 1x comes from: capacities experiment 5 found, read from committed runs
(experiments 8 and 9 take their loads as multiples of it).

A load in multiples of a capacity is only as good as that capacity. A figure typed into a
config drifts from the stack it names (experiment 9's first quick config carried 159.5 req/s
for default async, a short-step figure its 60 s holds later put at 62-93), so a config names
experiment-5 run folders instead (``[capacity_from]``) and the run takes, per architecture,
the **lowest found** capacity of that variant across them:

- only a search that closed counts (status ``found``: a passing hold with a confidently failing
  rate above it); a lower bound or a held floor is skipped and said so, and an architecture
  with no found figure in any run is a config error, never a silent guess;
- the lowest, because the default async build is metastable near its capacity: two runs of the
  same protocol found 62.4 and 93.3 req/s, and 1x must be a load the build has been seen to
  sustain, not the luckier run's.

A per-architecture ``capacity_rps`` in the config (a smoke profile's tiny loads) wins over
this (``settle_capacities``); where each figure came from is written into the run's protocol
(``capacity_source``).

    rps, source = measured_capacities(CapacityFrom(runs=("results/2026...",)), ("sync", "async"))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from experiments.config import Str, Table
from experiments.constants import REPO_ROOT

FOUND = "found"
SOURCE_EXPERIMENT = "experiment-5"


class CapacityFrom(Table):
    """Experiment-5 run folders (paths from the repository's root) and the variant to read."""

    runs: tuple[Str, ...] = Field(min_length=1)
    variant: Str = "default"


class CapacitySourceError(ValueError):
    """A named run is missing, is not a complete experiment-5 run, or found no capacity."""


def _rows(run: str, root: Path) -> list[dict[str, Any]]:
    folder = root / run
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        report = json.loads((folder / "report.json").read_text())
    except FileNotFoundError as exc:
        raise CapacitySourceError(f"capacity_from run {run!r}: no {Path(exc.filename).name} "
                                  f"under {folder}") from None
    except json.JSONDecodeError as exc:
        raise CapacitySourceError(f"capacity_from run {run!r}: unreadable JSON ({exc})") from None
    if manifest.get("experiment") != SOURCE_EXPERIMENT:
        raise CapacitySourceError(f"capacity_from run {run!r} is {manifest.get('experiment')!r}, "
                                  f"not {SOURCE_EXPERIMENT} (its best-build searches)")
    if manifest.get("status") != "complete":
        raise CapacitySourceError(f"capacity_from run {run!r} is {manifest.get('status')!r}, "
                                  "not complete")
    return list(report.get("rows") or [])


def measured_capacities(src: CapacityFrom, archs: tuple[str, ...], *,
                        root: Path = REPO_ROOT) -> tuple[dict[str, float], dict[str, Any]]:
    """Per architecture, the lowest found capacity of `src.variant` across `src.runs`, and a
    record of every figure read (used or skipped, with its status)."""
    seen: dict[str, list[dict[str, Any]]] = {a: [] for a in archs}
    for run in src.runs:
        for row in _rows(run, root):
            if row.get("variant") == src.variant and row.get("arch") in seen:
                seen[row["arch"]].append({"run": run, "capacity_rps": row.get("capacity_rps"),
                                          "status": row.get("capacity_status")})
    rps: dict[str, float] = {}
    for arch, figures in seen.items():
        found = [f for f in figures if f["status"] == FOUND and f["capacity_rps"]]
        if not found:
            said = "; ".join(f"{f['run']}: {f['status']}" for f in figures) or "no such row"
            raise CapacitySourceError(
                f"capacity_from: no found capacity for {src.variant}/{arch} in "
                f"{', '.join(src.runs)} ({said}); a lower bound cannot be 1x")
        rps[arch] = min(float(f["capacity_rps"]) for f in found)
    record = {"variant": src.variant, "rule": "lowest found capacity across the runs",
              "figures": seen, "capacity_rps": rps}
    return rps, record


def settle_capacities(capacity_rps: dict[str, float], capacity_from: CapacityFrom | None,
                      archs: tuple[str, ...], *, root: Path | None = None,
                      ) -> tuple[dict[str, float], dict[str, Any]]:
    """Every architecture's 1x: the config's own ``capacity_rps`` where it has one, else the
    lowest found capacity of ``capacity_from``'s runs; and, per architecture, where it came
    from (``capacity_source``). A missing figure with no runs to read is the caller's check."""
    wanted = tuple(a for a in archs if a not in capacity_rps)
    source: dict[str, Any] = {a: "config capacity_rps" for a in capacity_rps}
    rps = dict(capacity_rps)
    if wanted and capacity_from is not None:
        kwargs = {"root": root} if root is not None else {}
        found, record = measured_capacities(capacity_from, wanted, **kwargs)
        rps.update(found)
        source.update({a: record for a in wanted})
    return rps, source
