"""Sync model API (port 5000): ``POST /api/v1/ml/sync/predict`` sleeps 40-50 ms."""

from __future__ import annotations

import time

from flask import Flask

from services import fake_model, features
from services.describe import predict_path
from services.settings import Arch, Role, Settings
from services.sync_app.base import new_app, request_values


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings()
    app = new_app(Role.MODEL, settings)
    # The model receives the request's values plus the entity's stored features.
    max_values = settings.max_values + features.FEATURE_DIM

    @app.post(predict_path(Arch.SYNC))
    def predict():
        request_values(settings, max_values)
        fake_model.burn_cpu(settings.cpu_burn_s)
        slept = fake_model.draw_sleep(settings)
        time.sleep(slept)
        return {"detail": slept}

    return app
