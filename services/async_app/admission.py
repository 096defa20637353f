"""Admission control in the async stack (services/admission.py): pure ASGI middleware, the
outermost of the scoring app, so a refused or shed request costs no body read, no Redis and no
model call. Every request uvicorn parsed is a task on the worker's event loop at once; the
bound is on those that enter the handler (the event loop's "in flight"), checked when the task
first runs. Arrival: when the protocol parsed the request's first bytes (protocol.py puts it
in the scope), else, served some other way, when this middleware runs."""

from __future__ import annotations

import json
import time

from services import errors
from services.admission import DEADLINE_HEADER, STATS_PATH, Admission

ARRIVED_KEY = "scoring_lab.arrived"
_DEADLINE = DEADLINE_HEADER.lower().encode()


async def _send_json(send, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
        *((name.lower().encode(), value.encode()) for name, value in headers)]})
    await send({"type": "http.response.body", "body": body})


class AsgiAdmission:
    def __init__(self, app, admission: Admission, path: str) -> None:
        self.app = app
        self.admission = admission
        self.path = path

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == STATS_PATH and scope["method"] in ("GET", "HEAD"):
            await _send_json(send, 200, self.admission.stats_json(), [])
            return
        if path != self.path or scope["method"] != "POST":  # what else it is, the app says
            await self.app(scope, receive, send)
            return
        admission = self.admission
        if not admission.try_enter():
            error = errors.overloaded(admission.limit)
            await self._refuse(send, error)
            return
        arrived = scope.get(ARRIVED_KEY) or time.time()
        try:
            header = next((value.decode("latin-1") for name, value in scope["headers"]
                           if name == _DEADLINE), None)
            try:
                admission.check_deadline(header, arrived)
            except errors.ApiError as error:
                await self._refuse(send, error)
                return
            if admission.adaptive is None:
                await self.app(scope, receive, send)
                return
            status = 500

            async def recording(message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, recording)
            finally:
                admission.observe(arrived, status)
        finally:
            admission.leave()

    async def _refuse(self, send, error: errors.ApiError) -> None:
        await _send_json(send, error.status, json.dumps(error.body()).encode(),
                         self.admission.headers(error))
