"""What the runner reads from a real redis-server about the real RQ and SAQ queues: the depth
sampler counts the jobs they queue (no worker takes them), writes them to its CSV, and waiting
for an empty queue ends when the jobs are gone or its bound is spent; the queues' own records
of when a job was queued, started and ended are read back by job id."""

from __future__ import annotations

import asyncio
import csv
import signal
import time

import pytest
import redis
import redis.asyncio as aioredis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer
from saq.job import Status
from saq.queue.redis import RedisQueue

from experiments.analysis.jobs import WORKER_TIMES_FILE, read_depth, read_worker_times
from experiments.lab.job_times import collect_job_times
from experiments.lab.queue_depth import DepthSampler, waiting_keys
from experiments.load.job_log import JOB_LOG_COLUMNS
from services import jobs
from services.async_app.job_queue import job_times as saq_times
from services.settings import Arch
from tests.conftest import start_redis, stop


@pytest.fixture
def server(tmp_path):
    s = start_redis(tmp_path / "redis")
    yield s
    stop(s.process)


def _saq_enqueue(url: str, n: int) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(url)
        queue = RedisQueue(client, name=jobs.QUEUE_NAMES[Arch.ASYNC])
        await queue.connect()
        for _ in range(n):
            await queue.enqueue("score", key=jobs.new_job_id(), values=[1.0], entity="1")
        assert await queue.count("queued") == n
        await queue.disconnect()

    asyncio.run(go())


def test_it_counts_the_jobs_rq_and_saq_queue(server, tmp_path):
    conn = redis.Redis.from_url(server.url)
    rq = Queue(jobs.QUEUE_NAMES[Arch.SYNC], connection=conn, serializer=JSONSerializer)
    for _ in range(3):
        rq.enqueue_call("services.sync_app.job_queue.run_job",
                        kwargs=jobs.job_input([1.0], "1"), job_id=jobs.new_job_id())
    _saq_enqueue(server.url, 2)
    out = tmp_path / "depth.csv"
    with DepthSampler(server.url, waiting_keys(("sync", "async")), out, 0.05) as sampler:
        assert sampler.lengths() == {"sync": 3, "async": 2}
        time.sleep(0.3)
        rq.empty()
        time.sleep(0.3)
        record = sampler.wait_empty("sync", max_s=1)
        assert record["empty"] and record["depth"] == 0
        late = sampler.wait_empty("async", max_s=0.3)
        assert not late["empty"] and late["depth"] == 2 and late["waited_s"] >= 0.3
    sync, asynchronous = read_depth(out, "sync"), read_depth(out, "async")
    assert sync[0][1] == 3 and sync[-1][1] == 0 and {d for _, d in asynchronous} == {2}
    assert sampler.record()["samples"] == len(sync) >= 8 and not sampler.errors


def test_a_redis_that_does_not_answer_leaves_gaps_and_says_why(tmp_path):
    s = start_redis(tmp_path / "redis")
    url = s.url
    stop(s.process)
    out = tmp_path / "depth.csv"
    with DepthSampler(url, waiting_keys(("sync",)), out, 0.05) as sampler:
        time.sleep(0.2)
        record = sampler.wait_empty("sync", max_s=1)
    assert not record["empty"] and "ConnectionError" in record["error"]
    assert sampler.errors and read_depth(out, "sync") == []
    assert out.read_text().splitlines()[1].endswith(",")  # a sample row, its value empty


def test_a_bad_interval_is_named(tmp_path):
    with pytest.raises(ValueError, match="interval_s = 0"):
        DepthSampler("redis://127.0.0.1:1/0", {}, tmp_path / "d.csv", 0)


def _job_log(d, ids: list[str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    with (d / "jobs_1.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(JOB_LOG_COLUMNS)
        for k, job_id in enumerate(ids):
            w.writerow([1000 + k, 1000 + k, 1.0, 202, job_id, "done", 1001 + k, 2, 0, ""])
        w.writerow([999, 999, 1.0, 503, "", "rejected", "", 0, 0, "queue_full"])


def test_rqs_record_of_each_job_is_read_back_by_id(server, tmp_path):
    conn = redis.Redis.from_url(server.url)
    rq = Queue(jobs.QUEUE_NAMES[Arch.SYNC], connection=conn, serializer=JSONSerializer)
    done, waiting = jobs.new_job_id(), jobs.new_job_id()
    before = time.time()
    rq.enqueue_call("math.floor", args=[1.5], job_id=done)
    # RQ's own worker runs it (a function of no lab service: nothing else is reached)
    # RQ's worker installs its own SIGTERM/SIGINT handlers and leaves them: put the test
    # process's back, or a later test that relies on the default SIGTERM sees RQ's
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        SimpleWorker([rq], connection=conn, serializer=JSONSerializer).work(burst=True)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    rq.enqueue_call("math.floor", args=[2.5], job_id=waiting)
    step = tmp_path / "step"
    _job_log(step, [done, waiting, jobs.new_job_id()])  # the third: unknown to RQ
    assert collect_job_times(server.url, "sync", step) == {"jobs": 3, "found": 2}
    times = read_worker_times(step / WORKER_TIMES_FILE)
    queued, started, ended = times[done]
    assert before - 1 <= queued <= started <= ended <= time.time() + 1
    assert times[waiting][0] >= queued and times[waiting][1:] == (None, None)


def test_saqs_record_of_each_job_is_read_back_by_id(server, tmp_path):
    key = jobs.new_job_id()

    async def go() -> dict:
        client = aioredis.Redis.from_url(server.url)
        queue = RedisQueue(client, name=jobs.QUEUE_NAMES[Arch.ASYNC])
        await queue.connect()
        job = await queue.enqueue("score", key=key, values=[1.0], entity="1")
        await queue.finish(job, Status.COMPLETE, result={"result": {"detail": 1.0}})
        out = await saq_times(client, [key, jobs.new_job_id()])
        await queue.disconnect()
        return out

    before = time.time()
    times = asyncio.run(go())
    assert list(times) == [key]
    queued, started, completed = times[key]
    # SAQ keeps milliseconds: read as seconds; never started by a worker here
    assert before - 1 <= queued <= completed <= time.time() + 1 and started is None
    step = tmp_path / "step"
    _job_log(step, [key])
    assert collect_job_times(server.url, "async", step) == {"jobs": 1, "found": 1}
    assert read_worker_times(step / WORKER_TIMES_FILE)[key][2] == pytest.approx(completed)


def test_a_redis_that_does_not_answer_leaves_no_times_and_says_why(tmp_path):
    s = start_redis(tmp_path / "redis")
    url = s.url
    stop(s.process)
    step = tmp_path / "step"
    _job_log(step, [jobs.new_job_id()])
    record = collect_job_times(url, "sync", step)
    assert record["found"] == 0 and "ConnectionError" in record["error"]
    assert not (step / WORKER_TIMES_FILE).exists()
