"""The scoring work of the sync stack, one place for the in-line handler and the queue's
worker: features from Redis, the model API ``model_calls`` times one after the other (as a
blocking handler must), the mean."""

from __future__ import annotations

from services import aggregate, fake_model
from services.settings import Settings
from services.sync_app.clients import FeatureStore, ModelClient


def score(settings: Settings, store: FeatureStore, model: ModelClient, values: list[float],
          entity: str) -> float:
    body = aggregate.model_input(values, store.get(entity))
    fake_model.burn_cpu(settings.handler_cpu_s)
    predictions = [model.predict(body) for _ in range(settings.model_calls)]
    return aggregate.mean_prediction(predictions)
