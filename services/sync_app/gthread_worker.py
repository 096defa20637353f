"""gunicorn's gthread worker with admission control's bound before the thread queue (run only
when admission control is on: serve.py; otherwise the lab runs gunicorn's own class).

gunicorn's main thread polls the connections and hands each readable one to a pool of
``threads`` threads (``enqueue_req``); what finds no free thread waits in the pool's unbounded
queue and is parsed only when a thread takes it. Here ``enqueue_req`` first peeks (MSG_PEEK,
nothing consumed) at the request's first bytes: a scoring request (``POST <predict path>``)
takes a place of ``admission_limit`` (running plus queued) or is answered 503 at once by the
main thread, without a thread or a parse. Other requests (health checks, the counters) are
never held back. A connection with no bytes yet waits for them on the poller (gunicorn's own
path for a connection that sent nothing) rather than in a thread.

The refusal closes the connection: the request was not read, so the connection is not at a
request boundary. Closing a socket with unread bytes sends a reset, which can make the
client's kernel drop the 503 before the client reads it; so the socket's write side is shut
and its input read and dropped until the client closes (or the keep-alive timeout passes).

Each task also records when the main loop handed it over (``admission.ARRIVED``), so a
request's default budget counts its time in the queue. Not seen: the listen backlog and bytes
in a socket not yet polled.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from functools import partial
from http import HTTPStatus

from gunicorn.workers.gthread import ThreadWorker

from services import admission, errors
from services.describe import predict_path
from services.settings import Arch, Settings

_SCORING = b"POST " + predict_path(Arch.SYNC).encode()


def refusal(error: errors.ApiError, retry_after_s: int) -> bytes:
    """The whole 503 the main thread writes, closing."""
    body = json.dumps(error.body()).encode()
    return (f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Retry-After: {retry_after_s}\r\nConnection: close\r\n\r\n").encode() + body


def is_scoring(head: bytes) -> bool:
    """Whether a request starting with ``head`` is a scoring request. A head cut short of the
    prefix that could still be one counts as one (a first segment of a few bytes is rare, and
    gating another request by mistake only costs it a 503 under overload)."""
    return head.startswith(_SCORING) or (0 < len(head) < len(_SCORING)
                                         and _SCORING.startswith(head))


class LabThreadWorker(ThreadWorker):
    def init_process(self) -> None:
        # After the fork; the app (loaded in super().init_process) shares this object.
        self._admission = admission.for_process(Settings())
        super().init_process()

    def enqueue_req(self, conn) -> None:
        gated = False
        if self._admission.limit:
            head = self._head(conn)
            if head is None:
                self._wait_for_bytes(conn)
                return
            if is_scoring(head):
                if not self._admission.try_enter():
                    self._refuse(conn)
                    return
                gated = True
        arrived = time.time()
        future = self.tpool.submit(self._handle, conn, arrived)

        def done(fut) -> None:
            if gated:  # in the thread that ran it, before the main loop takes the connection
                self._admission.leave()
            self.method_queue.defer(self.finish_request, conn, fut)

        future.add_done_callback(done)

    def _handle(self, conn, arrived: float):
        admission.ARRIVED.set(arrived)
        return self.handle(conn)

    @staticmethod
    def _head(conn) -> bytes | None:
        """The request's first bytes without consuming them; None: none arrived yet."""
        if conn.parser is not None:
            # A kept-alive connection whose previous body drain read ahead into this request.
            buffered = conn.parser.unreader.buf.getvalue()
            if buffered:
                return buffered[:len(_SCORING)]
        try:
            return conn.sock.recv(len(_SCORING), socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError:
            return b""  # a broken connection: gunicorn's handler closes it

    def _wait_for_bytes(self, conn) -> None:
        conn.sock.setblocking(False)
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ,
                             partial(self.on_pending_socket_readable, conn))

    def _refuse(self, conn) -> None:
        # Built per refusal: an adaptive limit changes the number it names.
        answer = refusal(errors.overloaded(self._admission.limit), self._admission.retry_after_s)
        try:
            conn.sock.setblocking(False)
            # ~300 bytes into the send buffer of a connection with nothing else to send.
            sent = conn.sock.send(answer)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            sent = 0
        if sent != len(answer):
            self.nr_conns -= 1
            conn.close()
            return
        # Lingering close, with the kept-alive connections' timeout and bookkeeping (so
        # murder_keepalived ends it if the client never closes).
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.keepalived_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._drain, conn))

    def _drain(self, conn, _sock) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return
        self.poller.unregister(conn.sock)
        self.keepalived_conns.remove(conn)
        self.nr_conns -= 1
        conn.close()
