"""Sync model API (port 5000): ``POST /api/v1/ml/sync/predict`` sleeps 40-50 ms, on the
service's device when it has one (services/device.py); each request is a batch of one."""

from __future__ import annotations

import os
import time

from flask import Flask

from services import fake_model, features
from services.describe import DEBUG_MODEL_PATH, predict_path
from services.device import open_device
from services.settings import Arch, Role, Settings
from services.sync_app.base import new_app, request_values


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings()
    app = new_app(Role.MODEL, settings)
    device = open_device(settings)
    app.extensions["scoring_lab.device"] = device
    # The model receives the request's values plus the entity's stored features.
    max_values = settings.max_values + features.FEATURE_DIM

    @app.post(predict_path(Arch.SYNC))
    def predict():
        values = request_values(settings, max_values)
        with device.hold():
            fake_model.burn_cpu(fake_model.cpu_seconds(settings))
            slept = fake_model.draw_sleep(settings)
            time.sleep(slept)
        return fake_model.answer(slept, values, 1)

    @app.get(DEBUG_MODEL_PATH)
    def debug_model():
        return {"pid": os.getpid(), "batching": "off", **device.stats(),
                "model": fake_model.facts(settings)}

    return app
