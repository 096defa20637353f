"""Blocking clients of the sync scoring handler: the model API over HTTP and the Redis store.

Created once per gunicorn worker by the app factory and reused (keep-alive connection pools),
unless ``client_per_request`` reproduces the original's new client for every request.
"""

from __future__ import annotations

import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from services import aggregate, errors, features, redis_protocol
from services.settings import Settings
from services.sync_app import deadline
from services.workers import sync_requests_per_worker

# One retry, at once, only when the connection was lost (a restarted Redis leaves every
# pooled connection dead); never on a timeout, which would double the wait.
REDIS_RETRY = Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))


def pool_size(settings: Settings) -> int:
    """Connections each pool of a worker may hold: ``pool_size``, raised to the requests the
    worker serves at once. A gevent worker runs up to ``gevent_connections`` (1000) handlers
    at a time: a smaller Redis pool would make them queue for a connection (503 past
    ``redis_timeout_s``), and urllib3 opens a connection past its pool's size anyway, only to
    close it after one request (no keep-alive, a warning logged for each)."""
    return max(settings.pool_size, sync_requests_per_worker(settings))


class ModelClient:
    def __init__(self, settings: Settings, url: str) -> None:
        self._url = url
        self._timeout = settings.model_timeout_s
        self._per_request = settings.client_per_request
        self._pool_size = pool_size(settings)
        self._session = None if self._per_request else self._new_session()

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        adapter = deadline.DeadlineAdapter(pool_connections=1, pool_maxsize=self._pool_size)
        session.mount("http://", adapter)
        return session

    def predict(self, body: bytes) -> float:
        """One model call, bounded as a whole by ``model_timeout_s`` (services/sync_app/
        deadline.py); past the deadline any failure is a timeout (504), whatever the phase."""
        session = self._session or self._new_session()
        with deadline.deadline(self._timeout):
            try:
                response = session.post(
                    self._url,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=self._timeout,
                    # A model API is called, never redirected elsewhere (async does the same).
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                if isinstance(exc, requests.Timeout) or deadline.remaining() <= 0:
                    raise errors.model_timeout(self._timeout) from None
                raise errors.model_unavailable(type(exc).__name__) from None
            finally:
                if self._session is None:
                    session.close()
        return aggregate.parse_prediction(response.status_code, response.content)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


class FeatureStore:
    def __init__(self, settings: Settings) -> None:
        self._url = str(settings.redis_url)
        self._timeout = settings.redis_timeout_s
        self._protocol = redis_protocol.blocking_options(settings)
        # One client (and its pool) per worker: building a redis.Redis costs ~1.8 ms of CPU
        # (measured with yappi in experiment 1), too much to pay per request.
        self._client = (
            None
            if settings.client_per_request
            else redis.Redis(
                connection_pool=redis.BlockingConnectionPool.from_url(
                    self._url,
                    max_connections=pool_size(settings),
                    timeout=self._timeout,
                    socket_timeout=self._timeout,
                    socket_connect_timeout=self._timeout,
                    retry=REDIS_RETRY,
                    **self._protocol,
                )
            )
        )

    def get(self, entity: str) -> list[float]:
        client = self._client or redis.Redis.from_url(
            self._url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout,
            retry=REDIS_RETRY, **self._protocol,
        )
        try:
            raw = client.get(features.key(entity))
        except redis.RedisError as exc:
            raise errors.feature_store_unavailable(type(exc).__name__) from None
        finally:
            if self._client is None:
                client.close()
        return features.decode(entity, raw)

    def close(self) -> None:
        if self._client is not None:
            self._client.connection_pool.disconnect()
