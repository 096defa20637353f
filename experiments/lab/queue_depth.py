"""The job queues' depth over time, sampled from the lab's Redis while an experiment runs.

Depth is the number of jobs accepted and not yet started: the length of the Redis list each
queue library keeps them in (``waiting_key`` of services/sync_app/job_queue.py for RQ and of
services/async_app/job_queue.py for SAQ). A thread reads every queue's length in one pipeline
every ``interval_s`` and appends a row to a CSV (``t_unix`` and one column per architecture,
empty when Redis did not answer); experiments/analysis/jobs.py reads it back. Its cost is one
round trip per interval. The sampler reaches Redis at the topology's URL, which holds no
password: a lab whose Redis asks for one (the topology's ``auth``) leaves the samples empty and
the error on the run's record, and its steps start without waiting for an empty queue.

    with DepthSampler(redis_url, {"sync": key}, out / "queue_depth.csv", 1.0) as depth:
        depth.wait_empty("sync", max_s=60)
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path
from typing import Any

import redis

# Each Redis call of the sampler: a Redis that does not answer within it leaves a gap.
TIMEOUT_S = 1.0
# How often wait_empty reads the length itself (the CSV's interval may be coarser).
WAIT_POLL_S = 0.2


def waiting_keys(archs: tuple[str, ...]) -> dict[str, str]:
    """Per architecture, the Redis list of its queue's waiting jobs."""
    from services.async_app.job_queue import waiting_key as saq_key
    from services.sync_app.job_queue import waiting_key as rq_key

    known = {"sync": rq_key(), "async": saq_key()}
    return {a: known[a] for a in archs}


class DepthSampler:
    def __init__(self, redis_url: str, keys: dict[str, str], out: Path,
                 interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s = {interval_s!r}: must be > 0")
        self.keys, self.out, self.interval_s = keys, Path(out), interval_s
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT_S,
                                           socket_connect_timeout=TIMEOUT_S)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-depth", daemon=True)
        self.samples = 0
        self.errors: list[str] = []  # the first few failures, for the run's record

    def lengths(self) -> dict[str, int]:
        pipe = self._redis.pipeline(transaction=False)
        for key in self.keys.values():
            pipe.llen(key)
        return dict(zip(self.keys, (int(n) for n in pipe.execute()), strict=True))

    def _run(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with self.out.open("w", newline="", buffering=1) as f:
            writer = csv.writer(f)
            writer.writerow(["t_unix", *self.keys])
            next_t = time.time()
            while not self._stop.is_set():
                t = time.time()
                try:
                    row = [f"{t:.3f}", *self.lengths().values()]
                except (redis.RedisError, OSError) as exc:
                    row = [f"{t:.3f}", *([""] * len(self.keys))]
                    if len(self.errors) < 5:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                writer.writerow(row)
                self.samples += 1
                next_t += self.interval_s
                self._stop.wait(max(0.0, next_t - time.time()))

    def wait_empty(self, arch: str, max_s: float) -> dict[str, Any]:
        """Until no job waits in `arch`'s queue, at most max_s: the record of the wait (a step
        must not start on the previous one's backlog)."""
        start = time.monotonic()
        depth: int | None = None
        while True:
            try:
                depth = self.lengths()[arch]
            except (redis.RedisError, OSError) as exc:
                return {"empty": False, "waited_s": time.monotonic() - start,
                        "error": f"{type(exc).__name__}: {exc}"}
            if depth == 0 or time.monotonic() - start >= max_s:
                return {"empty": depth == 0, "waited_s": round(time.monotonic() - start, 3),
                        "depth": depth}
            time.sleep(WAIT_POLL_S)

    def __enter__(self) -> DepthSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5 * TIMEOUT_S + self.interval_s)
        self._redis.close()

    def record(self) -> dict[str, Any]:
        return {"file": self.out.name, "interval_s": self.interval_s, "keys": self.keys,
                "samples": self.samples, "errors": list(self.errors)}
