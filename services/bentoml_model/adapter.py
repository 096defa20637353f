"""The lab's model contract in front of BentoML's batchable API: an ASGI middleware.

What a scoring handler sends and expects (``POST /api/v1/ml/{sync,async}/predict`` with a JSON
list of numbers; ``{"detail", "input_mean", "batch_size"}`` back; the lab's error shape) is not
what BentoML's batchable API speaks: its body is the batch itself (a request of one item is
``[[5.1, 3.5]]``) and its answer is the list of that request's answers. So this middleware,
ahead of BentoML's routing:

- validates the body with the lab's own checks (services/payload.py: 415, 413, 400, 422 in the
  lab's shape, before the request reaches BentoML's batcher, as the plain micro-batcher does),
- hands BentoML the one-item batch on its API route (``BATCH_ROUTE``; both architectures' paths
  go to the one API, so their requests share one batcher) and unwraps the one answer,
- answers the health check and the debug endpoint (``GET /api/v1/debug/model``),
- refuses ``BATCH_ROUTE`` from outside (404): the lab's paths, with the lab's checks, are the
  only way in. Every other path is BentoML's own (its UI at ``/``, ``/livez``, ``/readyz``,
  ``/metrics``, its 404s): not the lab's shape.

A non-200 from BentoML becomes a lab-shaped error: 503 ``service_busy`` when its batcher
refused the request because it could not meet ``max_latency_ms`` (BentoML's "Service Busy"),
else 500 ``prediction_failed``. A batch the model failed or did not finish within
``MODEL_TIMEOUT_S`` comes back as each item's error body (500 ``prediction_failed``, 504
``prediction_timeout``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from services import errors, features, payload
from services.describe import DEBUG_MODEL_PATH, HEALTH_PATH, predict_path
from services.settings import Arch, Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The batchable API's route (services/bentoml_model/service.py): reached only through here.
BATCH_ROUTE = "/_bentoml/predict_batch"
PREDICT_PATHS = frozenset(predict_path(arch) for arch in Arch)
_GET = frozenset({"GET", "HEAD"})


class LabModelContract:
    """ASGI middleware: ``app`` is BentoML's service app; ``debug`` gives this worker's
    device and batch counters (services/bentoml_model/worker.py)."""

    def __init__(self, app: ASGIApp, *, settings: Settings,
                 debug: Callable[[], dict[str, object]]) -> None:
        self.app = app
        self.settings = settings
        self.debug = debug
        # The model receives the request's values plus the entity's stored features.
        self.max_values = settings.max_values + features.FEATURE_DIM

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path in (HEALTH_PATH, DEBUG_MODEL_PATH):
            if method not in _GET:
                await _send_error(send, errors.http_error(405), method)
            elif path == HEALTH_PATH:
                await _send_json(send, 200, {"status": "OK"}, method)
            else:
                await _send_json(send, 200, self.debug(), method)
        elif path in PREDICT_PATHS:
            if method != "POST":
                await _send_error(send, errors.http_error(405), method)
            else:
                await self._predict(scope, receive, send)
        elif path == BATCH_ROUTE:
            await _send_error(send, errors.http_error(404), method)
        else:
            await self.app(scope, receive, send)

    async def _predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            values = await self._values(scope, receive)
        except errors.ApiError as exc:
            await _send_error(send, exc, "POST")
            return
        body = json.dumps([values]).encode()  # a batch of one item
        kept = [(k, v) for k, v in scope["headers"]
                if k.lower() not in (b"content-type", b"content-length", b"transfer-encoding")]
        inner = {**scope, "path": BATCH_ROUTE, "raw_path": BATCH_ROUTE.encode(),
                 "headers": [*kept, (b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())]}
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the client's disconnect, if any

        status, answer = await _call(self.app, inner, replay)
        if status == 200:
            try:
                (one,) = json.loads(answer)
            except (ValueError, TypeError):
                one = None
            if isinstance(one, dict):
                # A batch the model failed answers each item with the lab's error body
                # (worker.py): sent with that error's status.
                failed = isinstance(one.get("status"), int) and "error" in one
                await _send_json(send, one["status"] if failed else 200, one, "POST")
                return
            error = errors.prediction_failed(f"BentoML answered {answer[:200]!r}")
        elif status == 503:
            error = errors.service_busy(self.settings.bentoml_max_latency_ms)
        else:
            error = errors.prediction_failed(f"BentoML answered HTTP {status}: {answer[:200]!r}")
        await _send_error(send, error, "POST")

    async def _values(self, scope: Scope, receive: Receive) -> list[float]:
        headers = _headers(scope)
        # Several Content-Type headers are joined, as both lab servers join them (then 415).
        payload.check_content_type(headers.get("content-type"))
        limit = self.settings.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise errors.body_too_large(int(declared), limit)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise errors.invalid_json("the client left before its body arrived")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise errors.body_too_large(size, limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return payload.parse_values(b"".join(chunks), max_values=self.max_values,
                                    max_body_bytes=limit)


def _headers(scope: Scope) -> dict[str, str]:
    joined: dict[str, str] = {}
    for key, value in scope["headers"]:
        name, text = key.decode("latin-1").lower(), value.decode("latin-1")
        joined[name] = f"{joined[name]}, {text}" if name in joined else text
    return joined


async def _call(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[int, bytes]:
    """Run the app on ``scope``; its status and whole body (answers are a few hundred bytes)."""
    status, chunks = 500, []

    async def capture(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, capture)
    return status, b"".join(chunks)


async def _send_error(send: Send, error: errors.ApiError, method: str) -> None:
    await _send_json(send, error.status, error.body(), method)


async def _send_json(send: Send, status: int, body: object, method: str) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else data})
