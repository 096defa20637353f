"""One BentoML worker process's model: its handle on the service's device and its batch counters.

Per process, made on first use (in the worker, never in BentoML's arbiter, which imports the
service module too): the service instance predicts through it and the lab adapter's debug
endpoint reads it.

A batch that fails or overruns ``MODEL_TIMEOUT_S`` is answered, item by item, with the lab's
error body (``prediction_failed``, ``prediction_timeout``) instead of an exception: BentoML
would turn an exception into its own 500 for every caller, and the adapter would no longer know
which error it was. The adapter sends such an item with the error's status.
"""

from __future__ import annotations

import asyncio
import logging
import os

from services import errors, fake_model
from services.async_app.batcher import Answer, BatchStats, fake_predict
from services.device import Device, open_device
from services.settings import Settings

log = logging.getLogger(__name__)

# One item's outcome: its answer, or the lab's error body (error, message, status).
Outcome = dict[str, float | int | str]


class WorkerModel:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device: Device = open_device(settings)
        self.stats = BatchStats()
        self._timeout_s = settings.model_timeout_s
        # The plain micro-batcher's model on a batch: the same costs per call and per item.
        self._predict = fake_predict(settings)

    async def predict(self, batch: list[list[float]]) -> list[Outcome]:
        """One batch BentoML formed, on one device slot for the whole of it."""
        self.stats.sizes[len(batch)] += 1
        try:
            async with self.device.hold_async():
                # The deadline is the prediction's, from when it has the slot (as the plain
                # micro-batcher's).
                async with asyncio.timeout(self._timeout_s):
                    outcomes: list[Answer] = await self._predict(batch)  # type: ignore[assignment]
            return list(outcomes)
        except TimeoutError:
            error = errors.prediction_timeout(self._timeout_s)
        except Exception as exc:
            log.exception("a batch of %d failed", len(batch))
            error = errors.prediction_failed(f"{type(exc).__name__}: {exc}"[:200])
        self.stats.failed_batches += 1
        return [error.body() for _ in batch]  # type: ignore[misc]

    def debug(self) -> dict[str, object]:
        stats = self.stats.as_dict()
        # BentoML decides its own waits; the plain batcher's max-wait figure has no meaning here.
        stats.pop("form_wait_max_ms")
        # the model as the other model APIs describe theirs, and BentoML's two batching knobs
        model = {**fake_model.facts(self.settings),
                 "batch_max_size": self.settings.model_batch_max_size,
                 "bentoml_max_latency_ms": self.settings.bentoml_max_latency_ms}
        return {"pid": os.getpid(), "batching": "bentoml", **self.device.stats(), **stats,
                "model": model}


_model: WorkerModel | None = None


def worker_model(settings: Settings) -> WorkerModel:
    global _model
    if _model is None:
        _model = WorkerModel(settings)
    return _model
