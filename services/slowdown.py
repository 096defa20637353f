"""The model API's run-time slowdown, for fault injection (experiment 9: "model API 3x slower").

With ``SCORING_LAB_MODEL_SLOWDOWN_FILE=<path>``, every prediction's wait is multiplied by the
number that file holds while it exists (``3`` = three times slower); without the file the
factor is 1. A file and not an endpoint because a service's workers are separate processes:
one file reaches all of them, on both architectures, without a restart (a redeploy would
restart the workers and measure the restart instead of the slow dependency). Each worker reads
it at most every READ_EVERY_S, so the fault starts and ends within that time of the file
changing, at the cost of one stat per READ_EVERY_S per worker. Off (the default ""), nothing is
read and the model runs the code every committed run measured.
"""

from __future__ import annotations

import math
import os
import time

from services.settings import Settings

READ_EVERY_S = 0.1
MAX_FACTOR = 1000.0

_cache: dict[str, tuple[float, float]] = {}  # path -> (monotonic time read, factor)


class SlowdownError(ValueError):
    """The slowdown file holds something other than a factor in [1, MAX_FACTOR]."""


def parse_factor(text: str, path: str) -> float:
    """The factor a slowdown file holds; SlowdownError naming the file and the bad value."""
    try:
        factor = float(text.strip())
    except ValueError:
        raise SlowdownError(f"{path}: {text.strip()[:40]!r} is not a number") from None
    if not math.isfinite(factor) or not 1.0 <= factor <= MAX_FACTOR:
        raise SlowdownError(f"{path}: slowdown factor {factor!r} is not in [1, {MAX_FACTOR:g}]")
    return factor


def read_factor(path: str) -> float:
    """The factor in ``path`` now: 1 without the file."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return 1.0
    return parse_factor(text, path)


def factor(settings: Settings, now: float | None = None) -> float:
    """This worker's slowdown factor (1 when the knob is off), read at most every
    READ_EVERY_S. A bad file fails the prediction (a 500 the experiment sees), never silently."""
    path = settings.model_slowdown_file
    if not path:
        return 1.0
    now = time.monotonic() if now is None else now
    cached = _cache.get(path)
    if cached is not None and now - cached[0] < READ_EVERY_S:
        return cached[1]
    value = read_factor(path)
    _cache[path] = (now, value)
    return value


def write_factor(path: str, value: float) -> None:
    """Set the factor atomically (a worker never reads half a file): the injector's side."""
    parse_factor(str(value), path)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{value:g}\n")
    os.replace(tmp, path)
