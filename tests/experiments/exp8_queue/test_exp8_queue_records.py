"""The queue-depth sampler on a real redis-server: jobs queued by the real RQ and SAQ (no worker
takes them) are what it counts, it writes them to its CSV, and waiting for an empty queue ends
when a job is taken or when its bound is spent."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import redis.asyncio as aioredis
from rq import Queue
from rq.serializers import JSONSerializer
from saq.queue.redis import RedisQueue

from experiments.analysis.jobs import read_depth
from experiments.lab.queue_depth import DepthSampler, waiting_keys
from services import jobs
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
