"""The "model": a prediction is a uniform 40-50 ms wait, optionally preceded by CPU work.

The wait stands for I/O-bound inference (a remote GPU, a database); the CPU burn, off by
default, stands for a CPU-bound model and shows how each architecture copes with one.

A prediction serves a batch of n items (n = 1 on demand; the async micro-batcher forms larger
ones): every cost setting is the cost of a batch of one, and each further item adds its
per-item part, so a batch of one costs exactly what a prediction cost before batching existed.
With a device (services/device.py) the prediction holds a slot for all of it.
"""

from __future__ import annotations

import math
import random
import sys
import time

from services import slowdown
from services.settings import Settings


def draw_sleep(settings: Settings, items: int = 1) -> float:
    """Seconds a batch of ``items`` sleeps: the base wait plus the per-item part, times the
    run-time slowdown factor when fault injection is on (services/slowdown.py; 1 when off)."""
    base = random.uniform(settings.sleep_min_s, settings.sleep_max_s)
    wait = base + settings.device_per_item_ms / 1000 * (items - 1)
    return wait * slowdown.factor(settings) if settings.model_slowdown_file else wait


def cpu_seconds(settings: Settings, items: int = 1) -> float:
    """CPU seconds a batch of ``items`` burns: the per-call part plus the per-item part."""
    return settings.cpu_burn_s + settings.cpu_burn_per_item_s * (items - 1)


def input_mean(values: list[float]) -> float:
    """The mean of one item's values, echoed in its answer so each caller can check that it
    got its own item's answer (items travel in batches). Each value is scaled first, so the
    sum stays finite for any list the payload check accepts (finite numbers) but for a last
    rounding step, which the clamp absorbs (JSON has no infinity)."""
    mean = sum(v / len(values) for v in values)
    return mean if math.isfinite(mean) else math.copysign(sys.float_info.max, mean)


def answer(slept: float, values: list[float], items: int) -> dict[str, float | int]:
    """One item's answer: ``detail`` (the seconds its prediction slept: the original's public
    shape, which the scoring handlers average), its input's mean, the size of its batch."""
    return {"detail": slept, "input_mean": input_mean(values), "batch_size": items}


def facts(settings: Settings) -> dict[str, object]:
    """The model this service runs, as its settings make it (the debug endpoint shows them, so
    a measurement names the model it measured from the server itself, whatever the deploy set):
    the base wait, the per-item device cost, the CPU burns, the device's slots."""
    return {"sleep_ms": [round(settings.sleep_min_s * 1000, 3),
                         round(settings.sleep_max_s * 1000, 3)],
            "device_per_item_ms": settings.device_per_item_ms,
            "cpu_burn_ms": round(settings.cpu_burn_s * 1000, 3),
            "cpu_burn_per_item_ms": round(settings.cpu_burn_per_item_s * 1000, 3)}


def burn_cpu(seconds: float) -> None:
    """Spin for ``seconds`` of this thread's CPU time (not wall time: a descheduled worker
    must still do the full amount of work). The scoring handlers use it too, for their own
    per-request CPU work (``handler_cpu_s``)."""
    if seconds <= 0:
        return
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass
