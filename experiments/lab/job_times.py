"""When each job of a step was queued, started and finished, as the queue itself recorded it.

A job's status (``GET .../jobs/<id>``) says pending, done or failed, not when: what a polling
client sees is the time to its first poll that finds the job done. Right after a step, while
the answers are still kept (``QUEUE_RESULT_TTL_S``, 300 s by default), the runner reads the
queue library's own records of the step's jobs from the lab's Redis (``job_times`` of
services/sync_app/job_queue.py for RQ, services/async_app/job_queue.py for SAQ) and writes
``worker_times.csv`` beside the job log: job_id, queued_unix, started_unix, ended_unix (empty
when the job never got that far). experiments/analysis/jobs.py splits the time to result with
it: the wait in the queue, the work, and the poll's lag behind the worker. The times come
from the clocks of the scoring handler (queued) and the worker (started, ended); on one host
that is the load generator's clock too, on several hosts their skew is in the split.

    record = collect_job_times(redis_url, "sync", step_dir)
"""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from experiments.analysis.jobs import WORKER_TIMES_COLUMNS, WORKER_TIMES_FILE, read_jobs

TIMEOUT_S = 5.0
BATCH = 500  # job ids per Redis round trip


def _read(redis_url: str, arch: str, ids: list[str]) -> dict[str, tuple[float | None, ...]]:
    if arch == "sync":
        from services.sync_app.job_queue import job_times

        client = redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT_S,
                                      socket_connect_timeout=TIMEOUT_S)
        try:
            return {k: v for i in range(0, len(ids), BATCH)
                    for k, v in job_times(client, ids[i:i + BATCH]).items()}
        finally:
            client.close()
    from services.async_app.job_queue import job_times as saq_times

    async def go() -> dict[str, tuple[float | None, ...]]:
        client = aioredis.Redis.from_url(redis_url, socket_timeout=TIMEOUT_S,
                                         socket_connect_timeout=TIMEOUT_S)
        try:
            out: dict[str, tuple[float | None, ...]] = {}
            for i in range(0, len(ids), BATCH):
                out.update(await saq_times(client, ids[i:i + BATCH]))
            return out
        finally:
            await client.aclose()

    return asyncio.run(go())


def collect_job_times(redis_url: str, arch: str, step_dir: Path) -> dict[str, Any]:
    """Read the queue's records of every accepted job of `step_dir`'s job logs and write
    them to step_dir/worker_times.csv; the record of what was read (a Redis that does not
    answer leaves no file and its error)."""
    ids = [r.job_id for r in read_jobs(sorted(step_dir.glob("jobs_*.csv"))) if r.job_id]
    try:
        times = _read(redis_url, arch, ids)
    except (redis.RedisError, OSError, ValueError) as exc:
        return {"jobs": len(ids), "found": 0, "error": f"{type(exc).__name__}: {exc}"}
    with (step_dir / WORKER_TIMES_FILE).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(WORKER_TIMES_COLUMNS)
        for job_id, stamps in times.items():
            writer.writerow([job_id, *("" if t is None else f"{t:.6f}" for t in stamps)])
    return {"jobs": len(ids), "found": len(times)}
