"""The async queue's sweep (services/async_app/saq_sweep.py) on a real Redis: a job just
dequeued and not yet marked active is not taken until a second sweep still finds it so, a job
marked in between is never taken, a job that ends by itself while being taken keeps its end,
and a record gone is taken off the active list. SAQ's own sweep takes the first at once."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from saq.job import Status
from saq.queue.redis import RedisQueue
from saq.utils import now

from services.async_app.saq_sweep import LabRedisQueue
from tests.conftest import start_redis, stop


@pytest.fixture
def redis_url(tmp_path):
    server = start_redis(tmp_path / "redis")
    yield server.url
    stop(server.process)


def run(redis_url, scenario, queue_class=LabRedisQueue):
    async def main():
        client = aioredis.Redis.from_url(redis_url)
        queue = queue_class(client, name="sweep-test")
        try:
            return await scenario(queue, client)
        finally:
            await client.aclose()
    return asyncio.run(main())


async def enqueue(queue, **kw):
    return await queue.enqueue("score", key=uuid.uuid4().hex, retries=2, ttl=300,
                               timeout=kw.pop("timeout", 10), values=[1.0], entity="1", **kw)


async def sweep(queue, client, abort=0.2):
    await client.delete(queue._sweep)  # the lock of the previous sweep: the next period is now
    return await queue.sweep(lock=5, abort=abort)


def test_a_job_just_dequeued_is_taken_only_when_a_second_sweep_still_finds_it_so(redis_url):
    async def scenario(queue, client):
        job = await enqueue(queue)
        dequeued = await queue.dequeue(timeout=1)  # in the active list, not marked active
        assert dequeued.id == job.id and dequeued.status == Status.QUEUED
        first = await sweep(queue, client)
        after_first = await queue.job(job.key)
        second = await sweep(queue, client)
        return first, after_first, second, await queue.job(job.key), \
            await client.lrange(queue._queued, 0, -1)

    first, after_first, second, final, queued = run(redis_url, scenario)
    assert first == [] and after_first.status == Status.QUEUED  # not taken at the first look
    assert second == [final.id]  # a worker that dequeued it and died: taken, requeued
    assert final.status == Status.QUEUED and final.error == "swept"
    assert queued == [final.id.encode()]


def test_saqs_own_sweep_takes_the_job_at_the_first_look(redis_url):
    # what the lab's sweep is for: SAQ takes a job a live worker has just dequeued
    async def scenario(queue, client):
        job = await enqueue(queue)
        await queue.dequeue(timeout=1)
        return await sweep(queue, client), job

    taken, job = run(redis_url, scenario, RedisQueue)
    assert taken == [job.id]


def test_a_job_marked_active_between_two_sweeps_is_never_taken(redis_url):
    async def scenario(queue, client):
        job = await enqueue(queue)
        dequeued = await queue.dequeue(timeout=1)
        first = await sweep(queue, client)
        dequeued.started = dequeued.touched = now()  # ms, SAQ's clock
        await dequeued.update(status=Status.ACTIVE)  # what the worker does next
        second = await sweep(queue, client)
        third = await sweep(queue, client)
        return first, second, third, await queue.job(job.key)

    first, second, third, final = run(redis_url, scenario)
    assert first == second == third == [] and final.status == Status.ACTIVE


def test_a_stuck_job_that_ends_done_while_taken_keeps_its_end(redis_url):
    async def scenario(queue, client):
        job = await enqueue(queue, timeout=1)
        dequeued = await queue.dequeue(timeout=1)
        dequeued.attempts += 1
        await dequeued.update(status=Status.ACTIVE, started=1)  # started in 1970: past 1 s

        async def worker_ends_it():
            await asyncio.sleep(0.3)  # while the sweep waits for the aborted job
            await dequeued.finish(Status.COMPLETE, result={"result": {"detail": 1.0}})

        ending = asyncio.create_task(worker_ends_it())
        taken = await sweep(queue, client, abort=3.0)
        await ending
        return taken, job, await queue.job(job.key), await client.lrange(queue._queued, 0, -1)

    taken, job, final, queued = run(redis_url, scenario)
    assert taken == [job.id]  # stuck past its timeout: taken at the first look, as SAQ does
    assert final.status == Status.COMPLETE and queued == []  # not run a second time


def test_an_active_entry_without_a_record_is_taken_off_the_list(redis_url):
    async def scenario(queue, client):
        job = await enqueue(queue)
        await queue.dequeue(timeout=1)
        await client.delete(job.id)
        return await sweep(queue, client), job, await client.lrange(queue._active, 0, -1)

    taken, job, active = run(redis_url, scenario)
    assert taken == [job.id] and active == []


def test_two_sweeps_never_take_one_job(redis_url):
    # A sweep waits for each job it takes, longer than its lock: another worker's sweep starts
    # meanwhile from the same active list. Two stuck jobs: the first sweep takes w and waits;
    # the second takes x and requeues it; the first then reaches x, which is not its to take
    # (taking it again would abort x's requeued run: x would end aborted with a retry left).
    async def scenario(queue, client):
        stuck = []
        for _ in range(2):
            await enqueue(queue, timeout=1)
            job = await queue.dequeue(timeout=1)
            job.attempts += 1
            await job.update(status=Status.ACTIVE, started=1)
            stuck.append(job)
        first = asyncio.create_task(sweep(queue, client, abort=1.0))
        await asyncio.sleep(0.2)  # the first is waiting for w
        second = await sweep(queue, client, abort=0.3)
        return await first, second, stuck, [await queue.job(j.key) for j in stuck], \
            await client.lrange(queue._queued, 0, -1)

    first, second, (w, x), (w_end, x_end), queued = run(redis_url, scenario)
    assert first == [w.id] and second == [x.id]
    assert w_end.status == x_end.status == Status.QUEUED  # both requeued, retries left
    assert sorted(queued) == sorted([w.id.encode(), x.id.encode()])
