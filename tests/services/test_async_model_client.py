"""The async scoring handler's model clients stay usable after a burst of timed-out calls.

httpcore's connection pool leaks a slot for good when a request is *cancelled* while it waits
for a connection under contention (encode/httpcore#1093, open): once every slot is leaked, each
later call waits out its pool timeout, so the scoring handler answers 504 to everything while
the model API is healthy. That is how the async stack failed every capacity step after one far
past its capacity (2026-12-01) until it was restarted. The clients must therefore never cancel a
call inside the HTTP library; this test drives a real client against a real (asyncio) HTTP
server on loopback: a burst of calls that time out under pool contention, then calls to an idle
server must succeed."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from services import errors
from services.async_app.clients import AiohttpModelClient, HttpxModelClient
from services.settings import Settings

POOL = 2
TIMEOUT_S = 0.1


async def _serve(delay: list[float]):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                await asyncio.sleep(delay[0])
                body = b'{"detail": 0.05}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("client_class", [HttpxModelClient, AiohttpModelClient])
def test_the_pool_survives_a_burst_of_timeouts(client_class):
    async def main() -> list[float]:
        delay = [0.25]  # slower than the timeout: every call of the burst times out
        server = await _serve(delay)
        port = server.sockets[0].getsockname()[1]
        settings = Settings(model_timeout_s=TIMEOUT_S, pool_size=POOL)
        client = client_class(settings, f"http://127.0.0.1:{port}/predict")
        timeouts = 0

        async def call() -> None:
            nonlocal timeouts
            try:
                await client.predict(b"[1, 2]")
            except errors.ApiError as exc:
                timeouts += exc.status == 504

        try:
            end = time.monotonic() + 3.0  # bounded churn: 20 callers against 2 slots
            while time.monotonic() < end:
                await asyncio.gather(*(call() for _ in range(20)))
            assert timeouts > 0
            delay[0] = 0.0  # the model is idle and fast again
            await asyncio.sleep(1.0)  # calls left running finish (bounded by their timeouts)
            return [await client.predict(b"[1, 2]") for _ in range(5)]
        finally:
            await client.aclose()
            server.close()

    assert asyncio.run(main()) == [0.05] * 5
