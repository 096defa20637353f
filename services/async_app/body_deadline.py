"""The request-body deadline of the async apps on a server that has none (granian: its only
timer is for the request head, services/granian_server.py).

uvicorn's protocol (services/async_app/protocol.py) answers 408 when a whole request has not
arrived within ``request_timeout_s``; on granian a body shorter than its Content-Length would
hold the request's task until the client went. This ASGI wrapper gives the body the same
deadline, counted from when the app first sees the request (granian parsed the head by then):
if the body is not complete by it, the client gets the lab's 408, and the app is told the
client disconnected, so its handler ends as on any disconnect (whatever it still sends is
dropped: its answer was given).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from services import errors

Scope = dict[str, Any]


class BodyDeadline:
    def __init__(self, app: Any, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    def __getattr__(self, name: str) -> Any:
        # The app's own attributes (FastAPI's state, routes) stay reachable through the wrapper.
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        state = {"body_done": False, "started": False, "answered": False}

        async def timed_receive() -> dict[str, Any]:
            if state["body_done"] or state["answered"]:
                return await receive()  # after the body: a disconnect, waited for as sent
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                if not state["started"]:
                    await _answer(send, errors.request_timeout(self.timeout_s))
                state["answered"] = True
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if state["answered"]:
                return  # the 408 was the answer
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, timed_receive, guarded_send)


async def _answer(send, error: errors.ApiError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
