"""The scoring work of the async stack, one place for the in-line handler and the queue's
worker: features from Redis, the model API ``model_calls`` times (concurrently unless
``sequential_model_calls``), the mean."""

from __future__ import annotations

import asyncio
from typing import Any

from services import aggregate, fake_model
from services.settings import Settings


async def score(settings: Settings, store: Any, model: Any, values: list[float],
                entity: str) -> float:
    body = aggregate.model_input(values, await store.get(entity))
    fake_model.burn_cpu(settings.handler_cpu_s)  # on the event loop: that is its cost
    calls = [model.predict(body) for _ in range(settings.model_calls)]
    if settings.sequential_model_calls:
        predictions = [await call for call in calls]
    else:
        predictions = await asyncio.gather(*calls)
    return aggregate.mean_prediction(predictions)
