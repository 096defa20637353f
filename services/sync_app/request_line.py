"""What meinheld hands the app that uvicorn would not: checked before Flask sees the request,
so the two architectures answer the same request line and framing the same way.

- absolute-form targets (``GET http://host/path``, which HTTP/1.1 servers must accept):
  meinheld puts the whole URL in PATH_INFO; uvicorn routes on its path. Reduced to the path.
- ``//path``: werkzeug strips leading slashes (``//api/v1/healthcheck`` would be served as
  ``/api/v1/healthcheck``); uvicorn's router does not match it. 404 in both.
- a Transfer-Encoding other than ``chunked``: meinheld ignores it and reads by Content-Length,
  uvicorn's parser refuses the request (as RFC 9112 asks). 400 in both.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from urllib.parse import urlsplit

from services import errors


def _answer(error: errors.ApiError, start_response) -> list[bytes]:
    body = json.dumps(error.body()).encode()
    start_response(f"{error.status} {HTTPStatus(error.status).phrase}", [
        ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
    ])
    return [body]


class RequestLineChecks:
    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith(("http://", "https://")):
            environ["PATH_INFO"] = urlsplit(path).path or "/"
        elif path.startswith("//"):
            return _answer(errors.http_error(404), start_response)
        coding = environ.get("HTTP_TRANSFER_ENCODING")
        if coding is not None and coding.strip().lower() != "chunked":
            return _answer(errors.bad_request(f"Transfer-Encoding {coding[:40]!r}"),
                           start_response)
        return self.app(environ, start_response)
