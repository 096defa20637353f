"""The body-size limit of the async services, enforced while the body streams in.

A declared Content-Length over the limit is refused before any byte is read (in
``base.request_values``, after the Content-Type check, in the same order as the sync apps).
A body without one (chunked) is counted here as uvicorn hands it over: one message past the
limit and the app's read raises the 413, so a 64 MiB chunked body costs at most
``max_body_bytes`` plus one network read, not 64 MiB of worker memory. The 413 then closes the
connection, so uvicorn does not go on reading the rest of the body to find the next request.
"""

from __future__ import annotations

from services import errors


class BodyLimit:
    """Pure ASGI middleware (no buffering, no per-request task)."""

    def __init__(self, app, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0
        refused = False

        async def counting_receive():
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    refused = True
                    # Raised inside the app's body read: its ApiError handler answers.
                    raise errors.body_too_large(received, self.max_body_bytes)
            return message

        async def closing_send(message) -> None:
            if refused and message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"connection", b"close")]}
            await send(message)

        await self.app(scope, counting_receive, closing_send)
