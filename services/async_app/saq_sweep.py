"""SAQ's Redis queue with a sweep that takes no job a live worker has just dequeued.

SAQ's sweep (``RedisQueue.sweep``, saq 0.26) runs in every worker every ``queue_sweep_s`` and
takes each job of the active list whose record is not ``active``, or is active past its
timeout. A worker's dequeue moves the job to the active list first (BLMOVE) and marks it active
two Redis round trips later, so a sweep between the two takes a job that is being worked: it
aborts it, waits up to 5 s for it to end, and then requeues it even when it ended done (it runs
twice; with no retry left its done is overwritten). SAQ's own issues tobymao/saq#124 and #277
report it; README, "Job queue", says what it cost before.

``LabRedisQueue.sweep`` keeps what the sweep is for (a job of a dead worker is taken again,
never lost) and drops the race:

- a job of the active list whose record is not ``active`` is taken only when the previous
  sweep saw it so too (one sweep period later: a live worker marks it within milliseconds);
  the jobs seen once are kept in Redis (``suspects``), as any worker's next sweep reads them;
- a job active past its timeout is taken at once, as SAQ does;
- a job is taken by the sweep that takes it off the active list (one sweep, never two: a
  sweep waits up to 5 s for each job it takes, longer than its lock, so another worker's may
  start meanwhile); it is aborted and waited for as SAQ does, and then requeued (retries
  left) or finished ``aborted``, unless it ended done or failed meanwhile: that end stands.
"""

from __future__ import annotations

import contextlib
import logging

from saq.job import Status
from saq.queue.redis import RedisQueue

log = logging.getLogger(__name__)

# Ends a taken job may reach by itself while the sweep waits for it; they are its answer.
_ENDED_BY_ITSELF = (Status.COMPLETE, Status.FAILED)


class LabRedisQueue(RedisQueue):
    """SAQ's RedisQueue, its sweep replaced (module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._suspects = self.namespace("sweep-suspects")

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        """One sweep, by one worker per `lock` seconds (as SAQ's); the ids it took."""
        if not await self.redis.set(self._sweep, 1, ex=lock, nx=True):
            return []
        ids = await self.redis.lrange(self._active, 0, -1)
        records = await self.redis.mget(ids) if ids else []
        seen_before = await self.redis.smembers(self._suspects)
        to_take, suspects = [], []
        for job_id, record in zip(ids, records, strict=True):
            job = self.deserialize(record)
            if job is not None and job.status == Status.ACTIVE and not job.stuck:
                continue
            if job is not None and job.status != Status.ACTIVE and job_id not in seen_before:
                suspects.append(job_id)  # maybe just dequeued: look again next sweep
                continue
            to_take.append((job_id, job))
        # The suspects first: a sweep of another worker may start while this one waits for a
        # taken job (each up to `abort` seconds, longer than the lock), and must read them.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._suspects)
            if suspects:
                pipe.sadd(self._suspects, *suspects).expire(self._suspects, 3 * lock)
            await pipe.execute()
        taken = []
        for job_id, job in to_take:
            # Claimed by taking it off the active list: a job that ended meanwhile, or that a
            # concurrent sweep claimed, is gone from it, and this sweep leaves it alone (two
            # sweeps taking one job would abort the requeued job of the first: ended aborted).
            if not await self.redis.lrem(self._active, 0, job_id):
                continue
            taken.append(job_id)
            if job is None:  # its record is gone: nothing to run again
                await self.redis.zrem(self._incomplete, job_id)
                log.warning("sweep: %s had no record; taken off the active list",
                            job_id.decode())
            else:
                await self._take(job, abort)
        return [job_id.decode() for job_id in taken]

    async def _take(self, job, abort: float) -> None:
        was = job.status.value
        await self.abort(job, error=self.swept_error_message)
        with contextlib.suppress(TimeoutError, RuntimeError):  # no end, or its record expired
            await job.refresh(abort)
        if job.status in _ENDED_BY_ITSELF:
            log.warning("sweep: %s (%s) ended %s while being taken; left as it ended",
                        job.id, was, job.status.value)
            return
        again = job.retryable
        if again:
            await self.retry(job, error=self.swept_error_message)
        else:
            await self.finish(job, Status.ABORTED, error=self.swept_error_message)
        log.warning("sweep: %s (%s, attempt %d) %s", job.id, was, job.attempts,
                    "requeued" if again else "finished aborted")
