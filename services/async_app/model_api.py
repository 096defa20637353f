"""Async model API (port 8000): ``POST /api/v1/ml/async/predict`` awaits 40-50 ms, on the
service's device when it has one (services/device.py): each request a batch of one, or, with
``SCORING_LAB_MODEL_BATCHING=micro``, a place in a micro-batch (batcher.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from services import fake_model, features
from services.async_app.base import VALUES_BODY_DOC, new_app, request_values
from services.async_app.batcher import MicroBatcher
from services.describe import DEBUG_MODEL_PATH, predict_path
from services.device import open_device
from services.settings import Arch, ModelBatching, Role, Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    device = open_device(settings)
    batching = settings.model_batching is ModelBatching.MICRO
    max_values = settings.max_values + features.FEATURE_DIM

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The batcher's collector task lives on the worker's event loop, made here.
        app.state.batcher = MicroBatcher(settings, device) if batching else None
        if app.state.batcher is None:
            yield
            return
        app.state.batcher.start()
        try:
            yield
        finally:
            await app.state.batcher.close()

    app = new_app(Role.MODEL, settings, lifespan)
    app.state.device = device

    @app.post(predict_path(Arch.ASYNC), openapi_extra=VALUES_BODY_DOC)
    async def predict(request: Request) -> dict[str, float | int]:
        values = await request_values(request, settings, max_values)
        if app.state.batcher is not None:
            return await app.state.batcher.submit(values)
        async with device.hold_async():
            # A CPU-bound model holds the event loop, as it would in a real async service.
            fake_model.burn_cpu(fake_model.cpu_seconds(settings))
            slept = fake_model.draw_sleep(settings)
            await asyncio.sleep(slept)
        return fake_model.answer(slept, values, 1)

    @app.api_route(DEBUG_MODEL_PATH, methods=["GET", "HEAD"])  # as Flask's GET routes
    async def debug_model() -> dict[str, object]:
        batcher = app.state.batcher
        model = fake_model.facts(settings)
        if batcher is not None:
            model.update(batch_max_size=settings.model_batch_max_size,
                         batch_max_wait_ms=settings.model_batch_max_wait_ms)
        return {"pid": os.getpid(), "batching": settings.model_batching.value,
                **device.stats(), **(batcher.stats.as_dict() if batcher is not None else {}),
                "model": model}

    return app
