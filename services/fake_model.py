"""The "model": a prediction is a uniform 40-50 ms wait, optionally preceded by CPU work.

The wait stands for I/O-bound inference (a remote GPU, a database); the CPU burn, off by
default, stands for a CPU-bound model and shows how each architecture copes with one.
"""

from __future__ import annotations

import random
import time

from services.settings import Settings


def draw_sleep(settings: Settings) -> float:
    return random.uniform(settings.sleep_min_s, settings.sleep_max_s)


def burn_cpu(seconds: float) -> None:
    """Spin for ``seconds`` of this thread's CPU time (not wall time: a descheduled worker
    must still do the full amount of work). The scoring handlers use it too, for their own
    per-request CPU work (``handler_cpu_s``)."""
    if seconds <= 0:
        return
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass
