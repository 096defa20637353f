"""A deadline for a whole blocking HTTP call (connect, send, headers and body), for requests.

requests' ``timeout`` bounds each socket operation, not the call: a model API sending one byte
every 1.5 s never trips a 2 s read timeout. Here every read of a pooled connection sets the
socket's timeout to the time left until the deadline of the call in progress, so the call ends
at its deadline whatever the peer does. The deadline lives in a ContextVar: per thread (gthread
workers) and per greenlet (meinheld, gevent), while the Session and its connection pool stay
shared by the whole worker.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.util.retry import Retry

_deadline: ContextVar[float | None] = ContextVar("scoring_lab_http_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Bound every read of this context's HTTP calls to ``seconds`` from now in total."""
    at = time.monotonic() + seconds
    token = _deadline.set(at)
    try:
        yield at
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    at = _deadline.get()
    return None if at is None else at - time.monotonic()


class _DeadlineReader(io.RawIOBase):
    """What http.client reads a response through (status line, headers, body): the socket's
    own raw reader (which keeps the socket open until it is closed itself, as http.client
    expects of ``makefile``), with the socket's timeout set to the time left before each
    read."""

    def __init__(self, sock) -> None:
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        left = remaining()
        if left is not None:
            if left <= 0:
                raise TimeoutError("deadline of the HTTP call passed")
            self._sock.settimeout(left)
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineSocket:
    """The connection's socket with ``makefile`` reading under the deadline; everything else
    (sendall, settimeout, fileno for urllib3's liveness check, close) goes to the socket."""

    def __init__(self, sock) -> None:
        self._sock = sock

    def makefile(self, mode: str = "r", *args, **kwargs):
        if mode != "rb":
            return self._sock.makefile(mode, *args, **kwargs)
        return io.BufferedReader(_DeadlineReader(self._sock))

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _DeadlineConnection(HTTPConnection):
    def _new_conn(self):
        # A new connection (or a retried one) connects within the time left, not a fresh
        # connect timeout.
        left = remaining()
        if left is not None:
            if left <= 0:
                raise TimeoutError("deadline of the HTTP call passed")
            self.timeout = min(self.timeout, left) if self.timeout is not None else left
        return _DeadlineSocket(super()._new_conn())


class _DeadlinePool(HTTPConnectionPool):
    ConnectionCls = _DeadlineConnection


# A pooled keep-alive connection the server dropped just as it was reused: one immediate retry
# on a fresh connection (the model call is idempotent). Dropped means closed (no answer) or,
# with meinheld, an unsolicited "408 Request Timeout" it writes on an idle keep-alive
# connection, read as the answer to the next request (7 sync 502s in 10,000 fuzz cases). A
# model never answers 408 to a request it received whole. The retry stays inside the call's
# deadline (reads and connects use the time left).
STALE_CONNECTION_RETRY = Retry(total=1, connect=1, read=1, status=1, redirect=0, other=0,
                               status_forcelist=frozenset({408}), allowed_methods=None,
                               backoff_factor=0, raise_on_status=False,
                               respect_retry_after_header=False)


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter (plain http) whose connections read under the current deadline."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("max_retries", STALE_CONNECTION_RETRY)
        super().__init__(*args, **kwargs)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            **self.poolmanager.pool_classes_by_scheme, "http": _DeadlinePool,
        }
