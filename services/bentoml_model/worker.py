"""One BentoML worker process's model: its handle on the service's device and its batch counters.

Per process, made on first use (in the worker, never in BentoML's arbiter, which imports the
service module too): the service instance predicts through it and the lab adapter's debug
endpoint reads it.
"""

from __future__ import annotations

import os

from services.async_app.batcher import Answer, BatchStats, fake_predict
from services.device import Device, open_device
from services.settings import Settings


class WorkerModel:
    def __init__(self, settings: Settings) -> None:
        self.device: Device = open_device(settings)
        self.stats = BatchStats()
        # The plain micro-batcher's model on a batch: the same costs per call and per item.
        self._predict = fake_predict(settings)

    async def predict(self, batch: list[list[float]]) -> list[Answer]:
        """One batch BentoML formed, on one device slot for the whole of it."""
        self.stats.sizes[len(batch)] += 1
        try:
            async with self.device.hold_async():
                outcomes = await self._predict(batch)
        except Exception:
            self.stats.failed_batches += 1
            raise
        # fake_predict answers every item with an answer (it has no per-item failure).
        return outcomes  # type: ignore[return-value]

    def debug(self) -> dict[str, object]:
        stats = self.stats.as_dict()
        # BentoML decides its own waits; the plain batcher's max-wait figure has no meaning here.
        stats.pop("form_wait_max_ms")
        return {"pid": os.getpid(), "batching": "bentoml", **self.device.stats(), **stats}


_model: WorkerModel | None = None


def worker_model(settings: Settings) -> WorkerModel:
    global _model
    if _model is None:
        _model = WorkerModel(settings)
    return _model
