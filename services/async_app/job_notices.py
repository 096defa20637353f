"""Wake the async handler's long polls (``GET .../jobs/{id}?wait=``) when SAQ updates a job.

SAQ publishes every change of a job (queued, active, complete, failed, aborted) on a Redis
channel named after the job (``RedisQueue.notify``), and its own ``Job.refresh(until_complete=)``
listens there. That listener is not used as it is, for two reasons read in saq 0.26's code
(``saq/multiplexer.py``): its one subscription is made when the first waiter arrives and torn
down when the last leaves, so the first waiter can read the status before the subscription
stands and miss the job's end; and its timeout restarts with every message. So each uvicorn
worker keeps one pattern subscription to its queue's job channels for its whole life (one Redis
connection, made in the app's lifespan and confirmed before the worker serves), and a waiting
poll registers its job *before* reading the status: an update published after that read sets
its event.

A lost subscription (Redis restarted) is made again in the background; until it stands, long
polls end at their own deadlines with the status read then, so they answer late, never wrongly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator

import redis
import redis.asyncio as aioredis

from services import redis_protocol
from services.settings import Settings

log = logging.getLogger(__name__)
# Between attempts to subscribe again after the subscription was lost.
RESUBSCRIBE_S = 0.5


class JobNotices:
    """One pattern subscription (``<prefix>*``) and the events of the polls waiting on it."""

    def __init__(self, settings: Settings, prefix: str) -> None:
        self._pattern = f"{prefix}*"
        # No socket timeout: the subscription waits for messages as long as the worker lives
        # (said, not left to redis-py's default: 5 s since redis-py 8).
        self._redis = aioredis.Redis.from_url(
            str(settings.redis_url), socket_connect_timeout=settings.redis_timeout_s,
            socket_timeout=None, **redis_protocol.async_options(settings))
        self._timeout_s = settings.redis_timeout_s
        self._waiting: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Subscribe and wait for Redis to confirm it, then deliver in the background. A
        worker starting while Redis is away serves anyway (its in-line path answers 503 for
        the feature store) and subscribes as soon as Redis is back."""
        try:
            pubsub: aioredis.client.PubSub | None = await self._subscribe()
        except (redis.RedisError, OSError, TimeoutError) as exc:
            log.warning("job notices: cannot subscribe yet (%s); trying again in the "
                        "background", type(exc).__name__)
            pubsub = None
        self._task = asyncio.create_task(self._deliver(pubsub), name="job-notices")

    async def _subscribe(self) -> aioredis.client.PubSub:
        pubsub = self._redis.pubsub()
        try:
            async with asyncio.timeout(self._timeout_s):
                await pubsub.psubscribe(self._pattern)
                while True:  # until the confirmation: a message published before it is not seen
                    message = await pubsub.get_message(timeout=self._timeout_s)
                    if message and message["type"] == "psubscribe":
                        return pubsub
        except BaseException:
            await _close(pubsub)
            raise

    async def _deliver(self, pubsub: aioredis.client.PubSub | None) -> None:
        if pubsub is None:
            pubsub = await self._resubscribe()
        while True:
            try:
                message = await pubsub.get_message(timeout=None)
                if message and message["type"] == "pmessage":
                    channel = message["channel"]
                    channel = channel.decode() if isinstance(channel, bytes) else channel
                    for event in self._waiting.get(channel, ()):
                        event.set()
            except asyncio.CancelledError:
                await _close(pubsub)
                raise
            except (redis.RedisError, OSError, TimeoutError) as exc:
                log.warning("job notices: subscription lost (%s: %s); long polls end at "
                            "their deadlines until it is made again", type(exc).__name__, exc)
                await _close(pubsub)
                pubsub = await self._resubscribe()

    async def _resubscribe(self) -> aioredis.client.PubSub:
        while True:
            await asyncio.sleep(RESUBSCRIBE_S)
            try:
                return await self._subscribe()
            except (redis.RedisError, OSError, TimeoutError):
                continue

    @contextlib.contextmanager
    def watch(self, channel: str) -> Iterator[asyncio.Event]:
        """An event set by every update of the job published on `channel`, from now on."""
        event = asyncio.Event()
        self._waiting[channel].add(event)
        try:
            yield event
        finally:
            waiters = self._waiting[channel]
            waiters.discard(event)
            if not waiters:
                del self._waiting[channel]

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, redis.RedisError, OSError):
                await self._task
        with contextlib.suppress(redis.RedisError, OSError):
            await self._redis.aclose()


async def _close(pubsub: aioredis.client.PubSub) -> None:
    with contextlib.suppress(redis.RedisError, OSError):
        await pubsub.aclose()
