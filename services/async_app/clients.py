"""Async clients of the async scoring handler: the model API over HTTP and the Redis store.

Created once per uvicorn worker in the app's lifespan and reused, unless ``client_per_request``
reproduces the original's new client (with its SSL context) for every request, or
``blocking_redis`` reproduces its blocking Redis call inside the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import aiohttp
import httpx
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services import aggregate, errors, features, redis_protocol
from services.settings import HttpClient, Settings
from services.sync_app.clients import FeatureStore as BlockingFeatureStore


class ModelClient(Protocol):
    async def predict(self, body: bytes) -> float: ...
    async def aclose(self) -> None: ...


_HEADERS = {"Content-Type": "application/json"}


class HttpxModelClient:
    def __init__(self, settings: Settings, url: str) -> None:
        self._url = url
        self._timeout = settings.model_timeout_s
        self._limits = httpx.Limits(
            max_connections=settings.pool_size, max_keepalive_connections=settings.pool_size
        )
        self._client = None if settings.client_per_request else self._new_client()
        self._slots = asyncio.Semaphore(settings.pool_size)
        # calls the handler stopped waiting for, still finishing (a reference keeps each alive)
        self._detached: set[asyncio.Future] = set()

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self._timeout, limits=self._limits)

    async def predict(self, body: bytes) -> float:
        client = self._client or self._new_client()
        # A call is never cancelled inside httpx: httpcore's pool leaks a connection slot for
        # good when a request is cancelled while it waits for a connection under contention
        # (encode/httpcore#1093, open); with every slot leaked, each later call waits out its
        # pool timeout and the handler answers 504 to everything, as the async stack did after
        # one capacity step far past its capacity (2026-12-01). So calls queue for a slot here
        # (a semaphore of the pool's size: waiting on it is safe to cancel, and httpx then
        # never waits for a connection), and a call that has its slot runs as its own task:
        # when the timeout ends the wait, the task finishes by itself (bounded by httpx's own
        # timeouts) and then frees its slot.
        call = None
        try:
            # The whole call (slot, connect, send, headers, body) within the timeout.
            async with asyncio.timeout(self._timeout):
                if self._client is not None:
                    await self._slots.acquire()
                call = asyncio.ensure_future(
                    client.post(self._url, content=body, headers=_HEADERS))
                if self._client is not None:
                    call.add_done_callback(self._release)
                response = await asyncio.shield(call)
        except (TimeoutError, httpx.TimeoutException):
            raise errors.model_timeout(self._timeout) from None
        except httpx.HTTPError as exc:
            raise errors.model_unavailable(type(exc).__name__) from None
        finally:
            if call is not None and not call.done():
                self._detached.add(call)
                call.add_done_callback(self._forget)
            if self._client is None:
                await client.aclose()
        return aggregate.parse_prediction(response.status_code, response.content)

    def _release(self, _call: asyncio.Future) -> None:
        self._slots.release()

    def _forget(self, call: asyncio.Future) -> None:
        # the caller has its 504 already; only the outcome is dropped (retrieved, so asyncio
        # does not log "exception was never retrieved")
        self._detached.discard(call)
        if not call.cancelled():
            call.exception()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class AiohttpModelClient:
    def __init__(self, settings: Settings, url: str) -> None:
        self._url = url
        self._timeout_s = settings.model_timeout_s
        self._timeout = aiohttp.ClientTimeout(total=settings.model_timeout_s)
        self._pool_size = settings.pool_size
        self._per_request = settings.client_per_request
        self._session: aiohttp.ClientSession | None = None

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._pool_size)
        return aiohttp.ClientSession(timeout=self._timeout, connector=connector)

    async def predict(self, body: bytes) -> float:
        # aiohttp wants a running loop to build a session, so the shared one is made lazily,
        # on the first request of this worker, and then kept.
        if self._per_request:
            session = self._new_session()
        else:
            self._session = self._session or self._new_session()
            session = self._session
        try:
            # ClientTimeout(total) bounds the call already; asyncio.timeout states it the same
            # way as the httpx client. A redirect is answered, never followed (sync does so).
            async with asyncio.timeout(self._timeout_s), session.post(
                self._url, data=body, headers=_HEADERS, allow_redirects=False
            ) as response:
                content = await response.read()
                status = response.status
        except TimeoutError:
            raise errors.model_timeout(self._timeout_s) from None
        except aiohttp.ClientError as exc:
            raise errors.model_unavailable(type(exc).__name__) from None
        finally:
            if self._per_request:
                await session.close()
        return aggregate.parse_prediction(status, content)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def model_client(settings: Settings, url: str) -> ModelClient:
    if settings.http_client is HttpClient.AIOHTTP:
        return AiohttpModelClient(settings, url)
    return HttpxModelClient(settings, url)


def _redis_retry() -> Retry:
    # As the sync store (sync_app/clients.py): one immediate retry on a lost connection only.
    return Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))


class FeatureStore:
    def __init__(self, settings: Settings) -> None:
        self._url = str(settings.redis_url)
        self._timeout = settings.redis_timeout_s
        self._protocol = redis_protocol.async_options(settings)
        # A blocking pool waits for a free connection; redis-py's default asyncio pool raises
        # MaxConnectionsError past 100 concurrent commands instead.
        # One client per worker (building one per request costs ~1.8 ms of CPU).
        self._client = (
            None
            if settings.client_per_request
            else aioredis.Redis(
                connection_pool=aioredis.BlockingConnectionPool.from_url(
                    self._url,
                    max_connections=settings.pool_size,
                    timeout=self._timeout,
                    socket_timeout=self._timeout,
                    socket_connect_timeout=self._timeout,
                    retry=_redis_retry(),
                    **self._protocol,
                )
            )
        )

    async def get(self, entity: str) -> list[float]:
        client = self._client or aioredis.Redis.from_url(
            self._url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout,
            retry=_redis_retry(), **self._protocol,
        )
        try:
            # The whole command (pool wait, connect, retry, reply) within the timeout.
            async with asyncio.timeout(self._timeout):
                raw = await client.get(features.key(entity))
        except (redis.RedisError, TimeoutError) as exc:
            raise errors.feature_store_unavailable(type(exc).__name__) from None
        finally:
            if self._client is None:
                await client.aclose()
        return features.decode(entity, raw)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose(close_connection_pool=True)


class BlockingRedisInLoop:
    """The original's flaw, kept as a variant: a sync Redis call made from a coroutine blocks
    the whole event loop for the round trip."""

    def __init__(self, settings: Settings) -> None:
        self._store = BlockingFeatureStore(settings)

    async def get(self, entity: str) -> list[float]:
        return self._store.get(entity)

    async def aclose(self) -> None:
        self._store.close()


def feature_store(settings: Settings) -> FeatureStore | BlockingRedisInLoop:
    return BlockingRedisInLoop(settings) if settings.blocking_redis else FeatureStore(settings)
