"""Repeats of a load experiment: the order of the architectures in each repeat (ABBA) and
where each repeat's raw data lives, for the runners and the reports alike.

Layout: a run of one repeat keeps raw/locust/ (as every run before repeats did, so committed
folders read as one repeat); a run of several keeps raw/repeat-<k>/locust/ per repeat.

    for k in range(1, protocol.repeats + 1):
        archs = abba(protocol.architectures, k)          # sync, async / async, sync / ...
        base = locust_root(run.raw, k, protocol.repeats)
    for k, base in locust_roots(run / "raw"): ...        # reading back, old folders too
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
_REPEAT_DIR = re.compile(r"^repeat-(\d+)$")


def abba(items: Sequence[T], repeat: int) -> list[T]:
    """The configured order in odd repeats, reversed in even ones (1-based), so that neither
    architecture always runs first (warm caches, a drifting machine) across a run."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    return list(items) if repeat % 2 else list(reversed(items))


def locust_root(raw: Path, repeat: int, repeats: int) -> Path:
    """Where repeat `repeat` (1-based) of a run of `repeats` keeps its Locust folders."""
    if repeats == 1:
        return raw / "locust"
    return raw / f"repeat-{repeat}" / "locust"


def locust_roots(raw: Path) -> list[tuple[int, Path]]:
    """(repeat, Locust folder) of every repeat found under raw/, in repeat order; a folder
    without repeat-<k>/ folders is one repeat, raw/locust."""
    found = sorted((int(m.group(1)), d / "locust") for d in raw.iterdir()
                   if d.is_dir() and (m := _REPEAT_DIR.match(d.name))) if raw.is_dir() else []
    return found or [(1, raw / "locust")]
