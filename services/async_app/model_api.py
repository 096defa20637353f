"""Async model API (port 8000): ``POST /api/v1/ml/async/predict`` awaits 40-50 ms."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request

from services import fake_model, features
from services.async_app.base import VALUES_BODY_DOC, new_app, request_values
from services.describe import predict_path
from services.settings import Arch, Role, Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = new_app(Role.MODEL, settings)
    max_values = settings.max_values + features.FEATURE_DIM

    @app.post(predict_path(Arch.ASYNC), openapi_extra=VALUES_BODY_DOC)
    async def predict(request: Request) -> dict[str, float]:
        await request_values(request, settings, max_values)
        # A CPU-bound model holds the event loop, as it would in a real async service.
        fake_model.burn_cpu(settings.cpu_burn_s)
        slept = fake_model.draw_sleep(settings)
        await asyncio.sleep(slept)
        return {"detail": slept}

    return app
