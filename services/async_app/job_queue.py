"""The async architecture's job queue: SAQ on the lab's Redis (services/jobs.py says what a job
is and what the endpoints answer).

The scoring handler submits and polls on its event loop (``SaqJobs``, made in the app's
lifespan); a queue worker process (``work``, one per process of ``serve --role queue --arch
async``) runs up to ``queue_concurrency`` jobs at once on its own loop, each doing what the
in-line handler does with the same async clients (services/async_app/clients.py). SAQ takes a
job with a blocking move (BLMOVE), so a waiting job starts as soon as a worker has room.

Lossless: a job whose worker is killed stays in SAQ's active list; every worker sweeps that list
every ``queue_sweep_s`` and, once the job is past its ``queue_job_timeout_s`` (or, never marked
active, on a second sweep: services/async_app/saq_sweep.py), aborts it (then waits up to 5 s
for the dead worker to confirm) and puts it back on the queue while it has retries left
(``queue_retries``), else finishes it ``aborted`` (answered as failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis
import redis.asyncio as aioredis
from saq import Worker
from saq.job import Status
from saq.queue.redis import RedisQueue

from services import errors, jobs, redis_protocol
from services.async_app import scoring
from services.async_app.clients import _redis_retry, feature_store, model_client
from services.async_app.job_notices import JobNotices
from services.async_app.saq_sweep import LabRedisQueue
from services.describe import predict_path
from services.settings import Arch, Settings

_FAILED = (Status.FAILED, Status.ABORTED)


def _quiet() -> None:
    # SAQ logs a line per job at INFO ("Enqueuing", "Processing"): as costly as a short job.
    logging.getLogger("saq").setLevel(logging.WARNING)


def waiting_key() -> str:
    """The Redis list of the jobs accepted and not yet started (what ``count("queued")``
    counts): experiment 8 samples its length as the queue's depth. SAQ names its keys
    ``saq:<queue>:<kind>`` (``RedisQueue.namespace``) and keeps no class constant for it; a
    test holds this to a real queue object's own name."""
    return f"saq:{jobs.QUEUE_NAMES[Arch.ASYNC]}:queued"


async def job_times(client: aioredis.Redis,
                    job_ids: list[str]) -> dict[str, tuple[float | None, ...]]:
    """(queued, started, completed), unix s by the clocks of the submitting handler and the
    worker, of each job of `job_ids` SAQ still holds (its answer not yet expired): experiment
    8 reads them after a step to split a job's time to result (SAQ's own records, in ms; no
    endpoint shows them). One MGET."""
    queue = RedisQueue(client, name=jobs.QUEUE_NAMES[Arch.ASYNC])
    found = await queue.jobs(job_ids)
    return {job_id: tuple(t / 1000 if t else None
                          for t in (job.queued, job.started, job.completed))
            for job_id, job in zip(job_ids, found, strict=True) if job is not None}


def _queue(client: aioredis.Redis, settings: Settings) -> RedisQueue:
    # SAQ bounds its own concurrent Redis calls per queue object (20 by default): the pool's size.
    # Its sweep is the lab's (services/async_app/saq_sweep.py: no job just dequeued is taken).
    return LabRedisQueue(client, name=jobs.QUEUE_NAMES[Arch.ASYNC],
                         max_concurrent_ops=settings.pool_size)


class SaqJobs:
    """Submit and poll, for the FastAPI app (one per uvicorn worker, made in its lifespan)."""

    def __init__(self, settings: Settings) -> None:
        _quiet()
        self._settings = settings
        timeout = settings.redis_timeout_s
        self._redis = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            str(settings.redis_url), max_connections=settings.pool_size, timeout=timeout,
            socket_timeout=timeout, socket_connect_timeout=timeout,
            # as the feature store: one immediate retry on a lost connection (a restarted Redis)
            retry=_redis_retry(), **redis_protocol.async_options(settings)))
        self._queue = _queue(self._redis, settings)
        # SAQ publishes each job's updates on a channel named after its id (job_id(key)).
        self._notices = JobNotices(settings, prefix=self._queue.job_id(""))

    async def connect(self) -> None:
        await self._queue.connect()
        await self._notices.start()

    async def submit(self, values: list[float], entity: str) -> str:
        """Queue a job and return its id; 503 queue_full (nothing queued) when the queue holds
        ``queue_max_length`` waiting jobs."""
        settings = self._settings
        job_id = jobs.new_job_id()
        try:
            # Two Redis round trips (the count, the enqueue script), each within the timeout.
            async with asyncio.timeout(2 * settings.redis_timeout_s):
                jobs.check_room(await self._queue.count("queued"), settings)
                await self._queue.enqueue(
                    score.__qualname__, key=job_id, timeout=settings.queue_job_timeout_s,
                    # SAQ's retries count attempts: the first one plus the retries.
                    retries=1 + settings.queue_retries, ttl=settings.queue_result_ttl_s,
                    **jobs.job_input(values, entity))
        except (redis.RedisError, TimeoutError) as exc:
            raise errors.queue_unavailable(type(exc).__name__) from None
        return job_id

    async def status(self, job_id: str, wait_s: float | None = None) -> dict[str, object]:
        """The job's answer (services/jobs.py); with `wait_s`, a long poll: this coroutine
        waits for SAQ's notice of the job's end, or `wait_s` (services/async_app/
        job_notices.py)."""
        jobs.check_job_id(job_id)
        if wait_s is None:
            return await self._status(job_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        with self._notices.watch(self._queue.job_id(job_id)) as changed:
            while True:
                changed.clear()  # before the read: an update after it sets the event again
                answer = await self._status(job_id)
                remaining = deadline - loop.time()
                if jobs.ended(answer) or remaining <= 0:
                    return answer
                # Every update wakes it (queued, active, a retry): the status says which.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await changed.wait()

    async def _status(self, job_id: str) -> dict[str, object]:
        try:
            async with asyncio.timeout(self._settings.redis_timeout_s):
                job = await self._queue.job(job_id)
        except (redis.RedisError, TimeoutError) as exc:
            raise errors.queue_unavailable(type(exc).__name__) from None
        if job is None:
            raise errors.job_not_found(job_id)
        if job.status == Status.COMPLETE:
            return jobs.finished(job_id, job.result)
        if job.status in _FAILED:
            return jobs.failed(job_id, jobs.last_line(job.error, f"SAQ status {job.status.value}"))
        return jobs.pending(job_id)

    async def aclose(self) -> None:
        await self._notices.aclose()
        try:
            # SAQ's disconnect unsubscribes its (never used here) pub/sub first: a Redis call
            await self._queue.disconnect()
        except (redis.RedisError, OSError):  # Redis gone: close the pool without it
            await self._redis.connection_pool.disconnect()


# ------------------------------------------------------------------------------ the workers

_CLIENTS = "scoring_lab"


async def score(ctx: dict, *, values: list[float], entity: str) -> dict[str, object]:
    """The in-line handler's work (services/async_app/scoring_api.py): features, the model
    ``model_calls`` times (concurrently unless ``sequential_model_calls``), the mean. A failure
    of the work itself is the job's outcome (services/jobs.py), not an exception SAQ would
    retry."""
    settings, store, model = ctx[_CLIENTS]
    try:
        return jobs.outcome_result(await scoring.score(settings, store, model, values, entity))
    except errors.ApiError as error:
        return jobs.outcome_error(error)


def worker_redis(settings: Settings) -> aioredis.Redis:
    """The SAQ worker's Redis client. Its dequeue (BLMOVE) blocks in Redis for up to
    ``queue_sweep_s``, so every read waits longer than that, by the Redis timeout: redis-py 8
    reads each reply within 5 s by default (older versions waited for ever), and a read that
    gives up when the blocking command's own 5 s end races Redis's: Redis hands a new job to
    the dequeue that has waited longest, the one about to give up, and a job moved to the
    active list for a connection just closed is worked by nobody until the sweep aborts it and
    retries it 5-10 s later (found by experiment 8's end-to-end test: a long poll of the first
    job after an idle gap unanswered for 5 s, its record "aborting", error "swept", never
    started, the worker's every dequeue on a new connection)."""
    return aioredis.Redis.from_url(
        str(settings.redis_url), socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=settings.queue_sweep_s + settings.redis_timeout_s,
        **redis_protocol.async_options(settings))


async def _work(settings: Settings) -> None:
    client = worker_redis(settings)
    queue = _queue(client, settings)
    url = settings.model_base_url(Arch.ASYNC) + predict_path(Arch.ASYNC)

    async def startup(ctx: dict) -> None:
        ctx[_CLIENTS] = (settings, feature_store(settings), model_client(settings, url))

    async def shutdown(ctx: dict) -> None:
        if _CLIENTS in ctx:
            _, store, model = ctx[_CLIENTS]
            await model.aclose()
            await store.aclose()

    worker = Worker(
        queue, functions=[score], concurrency=settings.queue_concurrency,
        startup=startup, shutdown=shutdown,
        timers={"sweep": settings.queue_sweep_s},
        # Wakes the dequeue this often even with no job, so a stop is seen (worker_redis reads
        # longer than this).
        dequeue_timeout=settings.queue_sweep_s,
        # SIGTERM: jobs in hand get this long to finish, then are cancelled (and retried).
        shutdown_grace_period_s=settings.queue_job_timeout_s)
    try:
        await queue.connect()
        await worker.start()
    finally:
        await queue.disconnect()


def work(settings: Settings) -> None:
    """Run one SAQ worker in this process until SIGTERM."""
    import uvloop  # the loop the async scoring handler runs on (uvicorn[standard] brings it)

    _quiet()
    uvloop.run(_work(settings))
