"""The sync architecture's job queue: RQ on the lab's Redis (services/jobs.py says what a job
is and what the endpoints answer).

The scoring handler submits and polls with blocking redis-py calls (``RqJobs``, one per gunicorn
worker); the queue workers (``work``, one per process of ``serve --role queue --arch sync``) run
``run_job``, which does what the in-line handler does with the same blocking clients.

Which worker: ``SCORING_LAB_RQ_WORKER=simple`` (the default) runs each job in the worker's own
process, so its Redis pool and model API session live as long as the worker; ``fork`` is RQ's
default worker, which forks a work horse per job: every job then pays a fork and opens new
connections to Redis and the model API (the horse's clients die with it), the in-line stack's
``client_per_request`` anti-pattern. The README ("Job queue") has the measured difference.

Lossless: a job whose worker is killed stays in RQ's StartedJobRegistry under a heartbeat that
expires ``queue_job_timeout_s`` + HEARTBEAT_MARGIN_S after it started (RQ's own default adds
60 s); every worker runs RQ's maintenance every ``queue_sweep_s``, which moves an expired job
back to the queue while it has retries left (``queue_retries``), else to failed
(AbandonedJobError). With the forking worker a killed work horse is seen by its parent at once
and handled the same way.
"""

from __future__ import annotations

import logging
import math

import redis
from rq import Queue, Retry, SimpleWorker, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from services import errors, jobs, redis_protocol
from services.describe import predict_path
from services.settings import Arch, RqWorker, Settings
from services.sync_app import scoring
from services.sync_app.clients import REDIS_RETRY, FeatureStore, ModelClient, pool_size

# Where RQ finds the job function (by name: JSON jobs hold no code).
JOB_FUNCTION = "services.sync_app.job_queue.run_job"
# After a job's timeout, the time its worker has to record the outcome before the job counts as
# abandoned.
HEARTBEAT_MARGIN_S = 3
# A tuple: membership by ==, which a plain str status and the str enum share (not by hash).
_FAILED = (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)


def waiting_key() -> str:
    """The Redis list of the jobs accepted and not yet started (what ``Queue.count`` counts):
    experiment 8 samples its length as the queue's depth."""
    return Queue.redis_queue_namespace_prefix + jobs.QUEUE_NAMES[Arch.SYNC]


def job_times(connection: redis.Redis,
              job_ids: list[str]) -> dict[str, tuple[float | None, ...]]:
    """(queued, started, ended), unix s by the clocks of the submitting handler and the worker,
    of each job of `job_ids` RQ still holds (its answer not yet expired): experiment 8 reads
    them after a step to split a job's time to result (RQ's own records; no endpoint shows
    them)."""
    found = Job.fetch_many(job_ids, connection=connection, serializer=JSONSerializer)
    return {job_id: tuple(t.timestamp() if t else None
                          for t in (job.enqueued_at, job.started_at, job.ended_at))
            for job_id, job in zip(job_ids, found, strict=True) if job is not None}


def _queue(connection: redis.Redis) -> Queue:
    # JSON, not RQ's default pickle: a job's arguments and outcome are plain data, and nothing
    # read back from Redis is unpickled.
    return Queue(jobs.QUEUE_NAMES[Arch.SYNC], connection=connection, serializer=JSONSerializer)


class RqJobs:
    """Submit and poll, for the Flask app (one per gunicorn worker)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        timeout = settings.redis_timeout_s
        self._redis = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            str(settings.redis_url), max_connections=pool_size(settings), timeout=timeout,
            socket_timeout=timeout, socket_connect_timeout=timeout, retry=REDIS_RETRY,
            **redis_protocol.blocking_options(settings)))
        self._queue = _queue(self._redis)
        # Long polls block on a Redis read for up to queue_max_wait_s: their own pool, whose
        # socket timeout outlasts the wait (the main pool's would cut it at redis_timeout_s).
        # Its size bounds this worker's waiting polls as its threads already do.
        self._waits = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            str(settings.redis_url), max_connections=pool_size(settings), timeout=timeout,
            socket_timeout=settings.queue_max_wait_s + timeout, socket_connect_timeout=timeout,
            retry=REDIS_RETRY, **redis_protocol.blocking_options(settings)))
        retries = settings.queue_retries
        self._retry = Retry(max=retries) if retries else None

    def submit(self, values: list[float], entity: str) -> str:
        """Queue a job and return its id; 503 queue_full (nothing queued) when the queue holds
        ``queue_max_length`` waiting jobs."""
        settings = self._settings
        job_id = jobs.new_job_id()
        try:
            jobs.check_room(self._queue.count, settings)
            self._queue.enqueue_call(
                JOB_FUNCTION, kwargs=jobs.job_input(values, entity), job_id=job_id,
                timeout=settings.queue_job_timeout_s, result_ttl=settings.queue_result_ttl_s,
                failure_ttl=settings.queue_result_ttl_s, retry=self._retry,
                # A waiting job never expires: accepted means it ends done or failed.
                ttl=None)
        except redis.RedisError as exc:
            raise errors.queue_unavailable(type(exc).__name__) from None
        return job_id

    def status(self, job_id: str, wait_s: float | None = None) -> dict[str, object]:
        """The job's answer (services/jobs.py); with `wait_s`, a long poll: blocks this worker's
        thread (or, under meinheld, its whole process) until RQ records the job's end or
        `wait_s` passes."""
        jobs.check_job_id(job_id)
        if wait_s is None:
            return self._status(job_id)
        # RQ adds an entry to the job's result stream as the job ends (done, failed, or
        # abandoned and failed by maintenance). The stream's last entry is read *before* the
        # status, and the wait reads from it: an end after the status read is never missed.
        stream = Result.get_key(job_id)
        try:
            last = self._redis.xrevrange(stream, count=1)
        except redis.RedisError as exc:
            raise errors.queue_unavailable(type(exc).__name__) from None
        answer = self._status(job_id)
        if jobs.ended(answer):
            return answer
        try:
            self._waits.xread({stream: last[0][0] if last else "0-0"}, count=1,
                              block=max(1, round(wait_s * 1000)))
        except redis.RedisError as exc:
            raise errors.queue_unavailable(type(exc).__name__) from None
        # An entry of a failed attempt that RQ retries wakes the wait too: the status says
        # pending again, and the client polls on.
        return self._status(job_id)

    def _status(self, job_id: str) -> dict[str, object]:
        try:
            job = Job.fetch(job_id, connection=self._redis, serializer=JSONSerializer)
            status = job.get_status(refresh=False)
            if status == JobStatus.FINISHED:
                return jobs.finished(job_id, job.return_value())
            if status in _FAILED:
                latest = job.latest_result()
                reason = latest.exc_string if latest is not None else None
                default = f"RQ status {JobStatus(status).value}"
                return jobs.failed(job_id, jobs.last_line(reason, default))
        except NoSuchJobError:
            raise errors.job_not_found(job_id) from None
        except redis.RedisError as exc:
            raise errors.queue_unavailable(type(exc).__name__) from None
        return jobs.pending(job_id)

    def close(self) -> None:
        self._redis.connection_pool.disconnect()
        self._waits.connection_pool.disconnect()


# ------------------------------------------------------------------------------ the workers

_clients: tuple[Settings, FeatureStore, ModelClient] | None = None


def _worker_clients() -> tuple[Settings, FeatureStore, ModelClient]:
    """The job's clients, made on the first job of a process and kept (a simple worker runs
    every job in one process; a forked work horse makes its own and loses them with it)."""
    global _clients
    if _clients is None:
        settings = Settings()
        model_url = settings.model_base_url(Arch.SYNC) + predict_path(Arch.SYNC)
        _clients = (settings, FeatureStore(settings), ModelClient(settings, model_url))
    return _clients


def run_job(values: list[float], entity: str) -> dict[str, object]:
    """The in-line handler's work (services/sync_app/scoring_api.py): features, the model
    ``model_calls`` times one after the other, the mean. A failure of the work itself is the
    job's outcome (services/jobs.py), not an exception RQ would retry."""
    settings, store, model = _worker_clients()
    try:
        return jobs.outcome_result(scoring.score(settings, store, model, values, entity))
    except errors.ApiError as error:
        return jobs.outcome_error(error)


class _AbandonedSoon:
    """A job's execution expires HEARTBEAT_MARGIN_S after its timeout, not RQ's 60 s."""

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        timeout = job.timeout if job.timeout and job.timeout > 0 else 0
        return max(1, math.ceil(timeout - working_time)) + HEARTBEAT_MARGIN_S


class LabSimpleWorker(_AbandonedSoon, SimpleWorker):
    log_result_lifespan = False  # one log line per job otherwise


class LabForkWorker(_AbandonedSoon, Worker):
    log_result_lifespan = False


WORKER_CLASSES = {RqWorker.SIMPLE: LabSimpleWorker, RqWorker.FORK: LabForkWorker}


def work(settings: Settings) -> None:
    """Run one RQ worker in this process until SIGTERM (RQ's warm shutdown: the job in hand
    is finished first)."""
    # No socket timeout of our own: RQ sets one just above its blocking dequeue's.
    connection = redis.Redis.from_url(str(settings.redis_url),
                                      socket_connect_timeout=settings.redis_timeout_s,
                                      **redis_protocol.blocking_options(settings))
    worker = WORKER_CLASSES[settings.rq_worker](
        [_queue(connection)], connection=connection, serializer=JSONSerializer,
        log_job_description=False,
        # Maintenance (abandoned jobs back to the queue or failed) runs between dequeues; the
        # blocking dequeue waits worker_ttl - 15 s, so both come every queue_sweep_s.
        maintenance_interval=settings.queue_sweep_s, worker_ttl=settings.queue_sweep_s + 15,
        job_monitoring_interval=settings.queue_sweep_s)
    # Per-job INFO lines cost the worker as much as a short job's bookkeeping.
    worker.work(with_scheduler=False, logging_level="WARNING")
    logging.getLogger(__name__).info("RQ worker %s stopped", worker.name)
