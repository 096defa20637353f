"""The plain asyncio micro-batcher of the async model API (``SCORING_LAB_MODEL_BATCHING=micro``).

Requests queue up; a batch starts with the first waiting one and takes those that arrive within
``MODEL_BATCH_MAX_WAIT_MS`` of it, or until ``MODEL_BATCH_MAX_SIZE``. It then waits for a device
slot (services/device.py), and requests that arrived meanwhile join it up to the size limit: they
would wait for the device anyway, so a busy device makes batches larger, never later. The batch
holds its slot for one prediction of n items (services/fake_model.py: base + per item x (n-1)),
and each caller gets its own item's answer.

It is the control for a batching server (BentoML): batching with nothing else. Every worker
process batches alone; with several workers their batches share the device slots.

Failures stay where they belong: a body that fails validation is refused (4xx) before it joins a
batch; the model answers each item with its answer or that item's own error, so one bad item
fails alone; a batch the model fails as a whole (an exception, or no answer within
``MODEL_TIMEOUT_S``, the callers' own deadline) fails each of its items with a 5xx at once, and
every item taken from the queue is answered, whatever happens, so no request is left waiting.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services import errors, fake_model
from services.device import Device
from services.settings import Settings

log = logging.getLogger(__name__)

Answer = dict[str, float | int]
# A batch's values in, one answer or ApiError per item out (in order).
Predict = Callable[[list[list[float]]], Awaitable[list[Answer | errors.ApiError]]]


def fake_predict(settings: Settings) -> Predict:
    """The fake model on a batch: CPU per call and per item, then one sleep for the batch."""

    async def predict(batch: list[list[float]]) -> list[Answer | errors.ApiError]:
        n = len(batch)
        fake_model.burn_cpu(fake_model.cpu_seconds(settings, n))  # holds the loop, as a model would
        slept = fake_model.draw_sleep(settings, n)
        await asyncio.sleep(slept)
        return [fake_model.answer(slept, values, n) for values in batch]

    return predict


@dataclass
class _Item:
    values: list[float]
    arrived: float
    answer: asyncio.Future


@dataclass
class BatchStats:
    """This worker's batches: how many of each size, and the longest any batch waited for more
    requests (from taking its first one to closing; the device wait after it excluded): never
    past the max wait but for the event loop's own lag."""

    sizes: collections.Counter = field(default_factory=collections.Counter)
    form_wait_max_s: float = 0.0
    failed_batches: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"batches": sum(self.sizes.values()),
                "items": sum(size * n for size, n in self.sizes.items()),
                "batch_sizes": {str(size): n for size, n in sorted(self.sizes.items())},
                "form_wait_max_ms": round(self.form_wait_max_s * 1000, 3),
                "failed_batches": self.failed_batches}


class MicroBatcher:
    def __init__(self, settings: Settings, device: Device, predict: Predict | None = None) -> None:
        self._max_size = settings.model_batch_max_size
        self._max_wait_s = settings.model_batch_max_wait_ms / 1000
        self._timeout_s = settings.model_timeout_s
        self._device = device
        self._predict = predict or fake_predict(settings)
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._collector: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self.stats = BatchStats()

    def start(self) -> None:
        self._collector = asyncio.get_running_loop().create_task(self._collect())

    async def close(self) -> None:
        """Stop batching; every request still queued or in a batch is answered (a 5xx)."""
        tasks = [t for t in (self._collector, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        while not self._queue.empty():
            _fail(self._queue.get_nowait(), errors.prediction_failed("the server is stopping"))

    async def submit(self, values: list[float]) -> Answer:
        """This item's answer once its batch ran (raises its ApiError)."""
        loop = asyncio.get_running_loop()
        item = _Item(values, loop.time(), loop.create_future())
        self._queue.put_nowait(item)
        return await item.answer

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            picked = loop.time()
            try:
                # From its arrival: one that queued behind a busy device has waited already.
                deadline = batch[0].arrived + self._max_wait_s
                while len(batch) < self._max_size and (left := deadline - loop.time()) > 0:
                    try:
                        async with asyncio.timeout(left):
                            batch.append(await self._queue.get())
                    except TimeoutError:
                        break
                self.stats.form_wait_max_s = max(self.stats.form_wait_max_s,
                                                 loop.time() - picked)
                await self._device.acquire()
            except BaseException:
                for item in batch:
                    _fail(item, errors.prediction_failed("the server is stopping"))
                raise
            # Those that came while the device was busy join, up to the size limit.
            while len(batch) < self._max_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            task = loop.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Item]) -> None:
        """One batch on the slot the collector took for it; releases it; answers every item."""
        self.stats.sizes[len(batch)] += 1
        try:
            with self._device.busy():
                async with asyncio.timeout(self._timeout_s):
                    outcomes = await self._predict([item.values for item in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} answers for {len(batch)} items")
            for item, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, errors.ApiError):
                    _fail(item, outcome)
                elif not item.answer.done():
                    item.answer.set_result(outcome)
        except TimeoutError:
            self.stats.failed_batches += 1
            for item in batch:
                _fail(item, errors.prediction_timeout(self._timeout_s))
        except Exception as exc:
            self.stats.failed_batches += 1
            log.exception("a batch of %d failed", len(batch))
            for item in batch:
                _fail(item, errors.prediction_failed(f"{type(exc).__name__}: {exc}"[:200]))
        finally:
            self._device.release()
            for item in batch:  # cancelled (the server stopping): still answered
                _fail(item, errors.prediction_failed("the server is stopping"))


def _fail(item: _Item, error: errors.ApiError) -> None:
    if not item.answer.done():
        item.answer.set_exception(error)

