"""Admission control in the sync stack (services/admission.py): WSGI middleware in front of
the scoring handler, inside the request-line checks (so an absolute-form target is gated as
its path).

What "in flight per worker" can mean per gunicorn worker class, and what the lab does:
- meinheld (unpatched) and sync: one request in the handler at a time, by construction. The
  others wait in the kernel (listen backlog, kept-alive sockets' buffers), where no Python
  code sees them; the limit cannot act there (any limit >= 1 never rejects). Deadline
  shedding is their tool: with an absolute deadline a request that waited out its client's
  budget in the backlog is shed at once when the worker reaches it.
- gevent (and meinheld with ``meinheld_patch``): a greenlet per request; the bound is checked
  here, when the greenlet enters the app, before any work (the request is parsed, no more).
- gthread: a selector loop hands readable connections to a pool of ``threads``; the rest wait
  in the pool's queue, unbounded, and are parsed only when a thread takes them. Checked in the
  app, the limit would act after that wait; so the lab's worker class (gthread_worker.py)
  bounds running plus queued in its main loop and answers the 503 there, before the thread
  queue. This middleware then only sheds and counts.
- granian (``SCORING_LAB_SERVER=granian``): a blocking thread per request in the app; checked
  here, as for gevent. Requests waiting for a free thread wait inside granian, unseen.
"""

from __future__ import annotations

import json
import time
from http import HTTPStatus

from services import errors
from services.admission import ARRIVED, DEADLINE_HEADER, STATS_PATH, Admission

_DEADLINE_KEY = "HTTP_" + DEADLINE_HEADER.upper().replace("-", "_")


def _answer(error: errors.ApiError, headers: list[tuple[str, str]], start_response):
    body = json.dumps(error.body()).encode()
    start_response(f"{error.status} {HTTPStatus(error.status).phrase}", [
        ("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers,
    ])
    return [body]


class WsgiAdmission:
    def __init__(self, app, admission: Admission, path: str, gate: bool) -> None:
        self.app = app
        self.admission = admission
        self.path = path
        self.gate = gate  # False: the worker class holds the bound (gthread)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == STATS_PATH and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            body = self.admission.stats_json()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        if path != self.path or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)  # what else it is, the app says
        arrived = ARRIVED.get() or time.time()
        admission = self.admission
        if self.gate and not admission.try_enter():
            error = errors.overloaded(admission.limit)
            return _answer(error, admission.headers(error), start_response)
        try:
            admission.check_deadline(environ.get(_DEADLINE_KEY), arrived)
            # The handler's work is done when a Flask view returns (its body is a list), so
            # the place is given back here, not when the server has written the answer.
            if admission.adaptive is None:
                return self.app(environ, start_response)
            statuses: list[int] = []

            def recording(status: str, headers, exc_info=None):
                statuses.append(int(status[:3]))
                return start_response(status, headers, exc_info)

            result = self.app(environ, recording)
            admission.observe(arrived, statuses[-1] if statuses else 500)
            return result
        except errors.ApiError as error:
            return _answer(error, admission.headers(error), start_response)
        finally:
            if self.gate:
                admission.leave()
