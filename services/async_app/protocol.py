"""uvicorn's httptools protocol with the limits uvicorn does not have, in one small subclass.

uvicorn (0.3x-0.5x) arms no timer before the first request of a connection and none while a
request is being received: an idle connection, cut-off headers or a cut-off body stay open
forever (slowloris). Its httptools parser buffers a header of any size, and its own 400 for
an unparsable request is plain text. This protocol adds, per connection:

- an idle timeout before the first request (the keep-alive timeout, as between requests);
- a request timeout: the whole request (line, headers, body) must arrive within
  ``request_timeout_s`` of its first byte, else 408 and close;
- meinheld's limits on the request head, so both architectures refuse the same requests
  (400): a request target, header name or header value over 8192 bytes, more than 129
  header fields;
- a limit on the whole request head (``max_header_bytes``), checked as it streams in, else
  431 and close (meinheld closes the connection without an answer there);
- the lab's error shape for these and for uvicorn's 400 (the same body as the apps').

Selected by ``services/uvicorn_server.py`` (the default parser); settings come from the
environment as in the apps (``Settings()``), so every worker has the same limits.
"""

from __future__ import annotations

import json
import time

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from services import admission, errors
from services.async_app.admission import ARRIVED_KEY
from services.settings import Settings

# meinheld 1.0.2's limits (measured: one byte more is its 400).
MAX_FIELD_BYTES = 8192  # request target, a header name, a header value
MAX_FIELDS = 129
# llhttp also takes 0.9 and 2.0 (meinheld: 0.9 is a 400, any other x.y is served as 1.1).
HTTP_VERSIONS = ("1.0", "1.1")


class _Refused(Exception):
    """Raised in a parser callback: httptools turns it into HttpParserError, whose handler
    (send_400_response) answers the refusal stored on the protocol."""


def error_response(error: errors.ApiError) -> bytes:
    """A complete HTTP/1.1 response carrying ``error`` in the lab's shape, closing."""
    body = json.dumps(error.body()).encode()
    return b"".join([
        STATUS_LINE[error.status],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
        body,
    ])


class LabHttpToolsProtocol(HttpToolsProtocol):
    _settings: Settings | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        settings = LabHttpToolsProtocol._settings
        if settings is None:  # once per worker process
            settings = LabHttpToolsProtocol._settings = Settings()
        self._request_timeout_s = settings.request_timeout_s
        self._max_header_bytes = settings.max_header_bytes
        self._stamp_arrival = admission.enabled(settings)
        self._request_timer = None
        self._header_bytes = 0
        self._in_headers = False
        self._refusal: errors.ApiError | None = None

    # -- connection ----------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        # uvicorn arms its keep-alive timer only after a response: arm it for the first
        # request too, so a connection that never sends a byte is closed as an idle one.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc) -> None:
        self._cancel_request_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._header_bytes += len(data)
        elif self._request_timer is None and (self.cycle is None or self.cycle.response_complete):
            # The first byte of a request starts its clock, even bytes the parser skips
            # (empty lines before a request line) that never begin a message.
            self._request_timer = self.loop.call_later(self._request_timeout_s, self._request_late)
        super().data_received(data)
        # A header still incomplete past the limit: refuse before buffering any more of it
        # (httptools keeps a header value in memory until its end).
        if self._in_headers and self._header_bytes > self._max_header_bytes:
            self._refuse(errors.headers_too_large(self._max_header_bytes))

    # -- parser callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._stamp_arrival:
            # When the event loop parsed the request's first bytes: its arrival, for
            # admission control's default budget (async_app/admission.py).
            self.scope[ARRIVED_KEY] = time.time()
        self._in_headers = True
        self._header_bytes = 0
        if self._request_timer is None:  # a pipelined request: its bytes came with another's
            self._request_timer = self.loop.call_later(self._request_timeout_s,
                                                       self._request_late)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) > MAX_FIELD_BYTES or len(value) > MAX_FIELD_BYTES:
            self._refuse_in_parser(f"header field over {MAX_FIELD_BYTES} bytes")
        super().on_header(name, value)
        if len(self.headers) > MAX_FIELDS:
            self._refuse_in_parser(f"more than {MAX_FIELDS} header fields")

    def on_headers_complete(self) -> None:
        self._in_headers = False
        if len(self.url) > MAX_FIELD_BYTES:
            self._refuse_in_parser(f"request target over {MAX_FIELD_BYTES} bytes")
        if self.parser.get_http_version() not in HTTP_VERSIONS:  # llhttp takes 0.9 and 2.0
            self._refuse_in_parser(f"HTTP/{self.parser.get_http_version()} is not served")
        super().on_headers_complete()

    def _refuse_in_parser(self, reason: str) -> None:
        self._refusal = errors.bad_request(reason)
        raise _Refused(reason)

    def on_message_complete(self) -> None:
        self._cancel_request_timer()
        super().on_message_complete()

    # -- answers -------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        self._cancel_request_timer()
        if self.transport.is_closing():
            return
        error = self._refusal or errors.bad_request(msg.rstrip("."))
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
