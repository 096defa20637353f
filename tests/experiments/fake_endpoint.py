"""A tiny scoring endpoint on 127.0.0.1 for load tests of the load generator itself: it checks
the request the locustfile sends, holds each request `hold_s`, and with `one_at_a_time` serves
like a single blocking worker (its ceiling is then 1 / hold_s requests per second). With
`drop_every` N, every Nth request is read and its connection closed without an answer (as
meinheld's keep-alive timer does to a request that arrived while the worker was busy)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAYLOAD = [5.1, 3.5, 1.4, 0.2]


@contextmanager
def score_server(hold_s: float = 0.01, one_at_a_time: bool = False,
                 drop_every: int = 0) -> Iterator[str]:
    """The server's base URL while the block runs."""
    gate = threading.Lock() if one_at_a_time else None
    seen = [0]
    count_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in two writes: without this, Nagle + delayed ACK add ~40 ms
        disable_nagle_algorithm = True

        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            ok = (json.loads(body) == PAYLOAD
                  and self.headers.get("Content-Type") == "application/json")
            with count_lock:
                seen[0] += 1
                drop = drop_every and seen[0] % drop_every == 0
            if drop:
                self.close_connection = True  # closed unanswered: not a byte of response
                return
            if gate is None:
                time.sleep(hold_s)
            else:
                with gate:
                    time.sleep(hold_s)
            out = json.dumps({"detail": 0.05} if ok else {"detail": "bad request"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
