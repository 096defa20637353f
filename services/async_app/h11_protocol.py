"""uvicorn's h11 protocol with the lab's limits, as services/async_app/protocol.py gives them
to httptools: so that SCORING_LAB_UVICORN_HTTP=h11 changes the parser, not what is refused.

Per connection, as with httptools:

- an idle timeout before the first request (the keep-alive timeout, as between requests);
- a request timeout: the whole request (line, headers, body) must arrive within
  ``request_timeout_s`` of its first byte, else 408 in the lab's shape and close;
- meinheld's limits on the request head (400): a request target, header name or header value
  over 8192 bytes, more than 129 header fields, an HTTP version other than 1.0 and 1.1, both
  Content-Length and Transfer-Encoding;
- a head still incomplete past ``max_header_bytes``: 431 in the lab's shape and close (h11's
  own "receive buffer too long", its limit set to ``max_header_bytes``);
- uvicorn's plain-text 400 for what h11 cannot parse: the lab's error shape instead.

What differs from httptools (the parsers accept different inputs; README, "Servers"):

- h11 checks the head's size only while the head is incomplete, httptools' protocol as the bytes
  stream in: a head that arrives whole in one read is not refused for its size by either, but
  h11 also counts bytes of the head still in its buffer when a read ends mid-head.
- h11 accepts bare-LF line ends (meinheld too: 200; httptools: 400), refuses an empty line
  before the request line at once (meinheld too: 400; httptools skips it and times out: 408),
  and refuses an HTTP/1.1 request without exactly one Host header (400; meinheld and
  httptools serve it). tests/fuzz/run.py (H11_DIFFERENCES) holds what the fuzz saw.
"""

from __future__ import annotations

import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from services import admission, errors
from services.async_app.admission import ARRIVED_KEY
from services.async_app.protocol import HTTP_VERSIONS, MAX_FIELD_BYTES, MAX_FIELDS, error_response
from services.settings import Settings


class _LabConnection(h11.Connection):
    """h11's connection that keeps the protocol error it raised (uvicorn's handler answers a
    fixed 400 and drops it) and checks meinheld's head limits on each request."""

    def __init__(self, max_head_bytes: int, on_end) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.error: h11.RemoteProtocolError | None = None
        self._on_end = on_end

    def next_event(self):
        try:
            event = super().next_event()
            if isinstance(event, h11.Request):
                _check_head(event)
        except h11.RemoteProtocolError as exc:
            self.error = exc
            raise
        if isinstance(event, h11.EndOfMessage):
            self._on_end()
        return event


def _check_head(request: h11.Request) -> None:
    if len(request.target) > MAX_FIELD_BYTES:
        raise h11.RemoteProtocolError(f"request target over {MAX_FIELD_BYTES} bytes")
    if request.http_version.decode() not in HTTP_VERSIONS:
        raise h11.RemoteProtocolError(f"HTTP/{request.http_version.decode()} is not served")
    if len(request.headers) > MAX_FIELDS:
        raise h11.RemoteProtocolError(f"more than {MAX_FIELDS} header fields")
    names = set()
    for name, value in request.headers.raw_items():
        if len(name) > MAX_FIELD_BYTES or len(value) > MAX_FIELD_BYTES:
            raise h11.RemoteProtocolError(f"header field over {MAX_FIELD_BYTES} bytes")
        names.add(name.lower())
    if {b"content-length", b"transfer-encoding"} <= names:
        # h11 lets Transfer-Encoding win; llhttp and meinheld refuse the pair (a request
        # smuggling vector), and so does the lab on every parser.
        raise h11.RemoteProtocolError("both Content-Length and Transfer-Encoding")


class LabH11Protocol(H11Protocol):
    _settings: Settings | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        settings = LabH11Protocol._settings
        if settings is None:  # once per worker process
            settings = LabH11Protocol._settings = Settings()
        self._request_timeout_s = settings.request_timeout_s
        self._max_header_bytes = settings.max_header_bytes
        self._stamp_arrival = admission.enabled(settings)
        self._request_timer = None
        self._arrived = 0.0
        self.conn = _LabConnection(settings.max_header_bytes, self._cancel_request_timer)

    # -- connection ----------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        # As with httptools: uvicorn arms its keep-alive timer only after a response, so a
        # connection that never sends a byte would stay open.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc) -> None:
        self._cancel_request_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._request_timer is None and (self.cycle is None or self.cycle.response_complete):
            # The first byte of a request starts its clock (empty lines before it included).
            self._arrived = time.time()
            self._request_timer = self.loop.call_later(self._request_timeout_s, self._request_late)
        super().data_received(data)

    def handle_events(self) -> None:
        scope = self.scope
        super().handle_events()
        if self._stamp_arrival and self.scope is not scope and self.scope is not None:
            # A new request's scope, its task not yet run: when its first bytes came, for
            # admission control's default budget (async_app/admission.py).
            self.scope[ARRIVED_KEY] = self._arrived or time.time()
        if (self.cycle is not None and self.cycle.response_complete
                and self.conn.their_state is h11.IDLE and self._request_timer is None
                and self.conn.trailing_data[0]):
            # A pipelined request's bytes came with another's: its clock starts now.
            self._arrived = time.time()
            self._request_timer = self.loop.call_later(self._request_timeout_s, self._request_late)

    # -- answers -------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        self._cancel_request_timer()
        if self.transport.is_closing():
            return
        exc = self.conn.error
        if exc is not None and exc.error_status_hint == 431:
            error = errors.headers_too_large(self._max_header_bytes)
        else:
            error = errors.bad_request(str(exc) if exc is not None and str(exc)
                                       else msg.rstrip("."))
        self.transport.write(error_response(error))
        self.transport.close()

    def _request_late(self) -> None:
        self._request_timer = None
        self._refuse(errors.request_timeout(self._request_timeout_s))

    def _refuse(self, error: errors.ApiError) -> None:
        """Answer ``error`` instead of the request being received, and close."""
        self._cancel_request_timer()
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # the app answered already: just stop
                self.transport.close()
                return
            # The app waits for the rest of the body: it sees a disconnect, its answer is
            # dropped, this one is sent instead.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(error_response(error))
        self.transport.close()

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
