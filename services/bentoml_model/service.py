"""The BentoML service: one batchable API running the lab's fake model on the device.

BentoML's dispatcher (its "adaptive batching") gathers concurrent requests of one worker into a
batch of at most ``SCORING_LAB_MODEL_BATCH_MAX_SIZE`` items, waiting as long as its own latency
model says pays, and answers 503 at once to a request it predicts it cannot serve within
``SCORING_LAB_BENTOML_MAX_LATENCY_MS``. It runs one batch at a time per worker; the batch holds
one device slot (services/device.py) for one prediction of n items (services/fake_model.py:
base + per item x (n-1)), exactly as the plain micro-batcher's do.

The decorators take their numbers at import, from the same SCORING_LAB_* settings as every lab
service (BentoML's arbiter and each worker import this module with the same environment).
Requests arrive through the lab's contract (adapter.py), never on ``BATCH_ROUTE`` directly.
"""

from __future__ import annotations

import bentoml

from services.bentoml_model.adapter import BATCH_ROUTE, LabModelContract
from services.bentoml_model.worker import Outcome, worker_model
from services.settings import Settings

SETTINGS = Settings()


@bentoml.service(
    name="scoring_lab_model",
    # One worker unless told: a worker batches alone, so more workers split the batches.
    workers=SETTINGS.workers or 1,
    # BentoML's own request timeout; the callers' deadline is MODEL_TIMEOUT_S.
    traffic={"timeout": max(1, round(SETTINGS.model_timeout_s * 2))},
    # No line per request, as the lab's other servers (their access logs are off too).
    logging={"access": {"enabled": False}},
)
class Model:
    def __init__(self) -> None:
        self.model = worker_model(SETTINGS)

    @bentoml.api(route=BATCH_ROUTE, batchable=True,
                 max_batch_size=SETTINGS.model_batch_max_size,
                 max_latency_ms=SETTINGS.bentoml_max_latency_ms)
    async def predict(self, batch: list[list[float]], /) -> list[Outcome]:
        """A batch of items (lists of values) in, one answer (or error body) per item out."""
        return await self.model.predict(batch)


Model.add_asgi_middleware(LabModelContract, settings=SETTINGS,
                          debug=lambda: worker_model(SETTINGS).debug())
