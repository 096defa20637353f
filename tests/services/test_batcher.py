"""The micro-batcher and the device on a real event loop, with a model that a test controls:
one item failing, a whole batch failing or hanging, the server stopping mid-batch. Every
request must get its answer (or its own error) within a bound; none may be left waiting."""

from __future__ import annotations

import asyncio
import time

import pytest

from services import errors
from services.async_app.batcher import MicroBatcher
from services.device import Device, create_fifo, open_device
from services.settings import Settings


def batcher_settings(**values) -> Settings:
    return Settings(**{"model_batch_max_size": 4, "model_batch_max_wait_ms": 20,
                       "model_timeout_s": 0.5, "device_slots": 1, **values})


async def submit_all(batcher: MicroBatcher, items: list[list[float]], bound_s: float = 2.0):
    """Every item's answer or error, all submitted at once; fails if any is left waiting."""
    async with asyncio.timeout(bound_s):
        return await asyncio.gather(*(batcher.submit(v) for v in items), return_exceptions=True)


def run(coro):
    return asyncio.run(coro)


def test_one_bad_item_fails_alone():
    async def predict(batch):
        return [errors.invalid_payload("item 13 is cursed") if values == [13.0] else
                {"detail": 0.0, "input_mean": values[0], "batch_size": len(batch)}
                for values in batch]

    async def main():
        settings = batcher_settings()
        batcher = MicroBatcher(settings, open_device(settings), predict)
        batcher.start()
        try:
            return await submit_all(batcher, [[11.0], [12.0], [13.0], [14.0]]), batcher.stats
        finally:
            await batcher.close()

    answers, stats = run(main())
    assert [a["input_mean"] for a in answers if isinstance(a, dict)] == [11.0, 12.0, 14.0]
    assert isinstance(answers[2], errors.ApiError) and answers[2].status == 422
    assert dict(stats.sizes) == {4: 1} and stats.failed_batches == 0


@pytest.mark.parametrize("fault", ["raises", "hangs", "answers short"])
def test_a_failed_batch_answers_every_waiting_request_at_once(fault):
    async def predict(batch):
        if fault == "raises":
            raise RuntimeError("the accelerator fell over")
        if fault == "hangs":
            await asyncio.sleep(60)
        return [{"detail": 0.0, "input_mean": 0.0, "batch_size": 1}]  # one answer for many

    async def main():
        settings = batcher_settings()
        device = open_device(settings)
        batcher = MicroBatcher(settings, device, predict)
        batcher.start()
        began = time.perf_counter()
        try:
            answers = await submit_all(batcher, [[1.0], [2.0], [3.0]])
        finally:
            await batcher.close()
        return answers, time.perf_counter() - began, device.free_slots(), batcher.stats

    answers, took, free, stats = run(main())
    expected = 504 if fault == "hangs" else 500
    assert all(isinstance(a, errors.ApiError) and a.status == expected for a in answers), answers
    if fault == "hangs":  # within the batch deadline (MODEL_TIMEOUT_S 0.5 s), not the minute
        assert took < 1.5, took
    assert free == 1 and stats.failed_batches == 1  # the slot came back


def test_batches_respect_max_size_and_max_wait_without_a_device():
    async def predict(batch):
        await asyncio.sleep(0.01)
        return [{"detail": 0.01, "input_mean": v[0], "batch_size": len(batch)} for v in batch]

    async def main():
        settings = batcher_settings(device_slots=0)
        batcher = MicroBatcher(settings, open_device(settings), predict)
        batcher.start()
        try:
            answers = await submit_all(batcher, [[float(i)] for i in range(10)])
            await asyncio.sleep(0.05)  # later, alone: a batch of one after the max wait
            lone = await submit_all(batcher, [[99.0]])
        finally:
            await batcher.close()
        return answers, lone, batcher.stats

    answers, lone, stats = run(main())
    assert [a["input_mean"] for a in answers] == [float(i) for i in range(10)]
    assert max(stats.sizes) == 4 and sum(n * s for s, n in stats.sizes.items()) == 11
    assert lone[0]["batch_size"] == 1
    assert 0.015 <= stats.form_wait_max_s < 0.020 + 0.05, stats  # waited, and not past it


def test_stopping_answers_queued_and_running_requests():
    started = asyncio.Event()

    async def predict(batch):
        started.set()
        await asyncio.sleep(60)

    async def main():
        settings = batcher_settings(model_timeout_s=30)
        device = open_device(settings)
        batcher = MicroBatcher(settings, device, predict)
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit([float(i)])) for i in range(6)]
        await started.wait()
        await batcher.close()
        async with asyncio.timeout(1):
            answers = await asyncio.gather(*pending, return_exceptions=True)
        return answers, device.free_slots()

    answers, free = run(main())
    assert all(isinstance(a, errors.ApiError) and a.status == 500 for a in answers), answers
    assert free == 1


def test_device_hands_slots_out_in_order_and_gets_them_back():
    async def main():
        device = Device(2, create_fifo(2))
        order = []

        async def use(i: int) -> None:
            async with device.hold_async():
                order.append(("in", i))
                await asyncio.sleep(0.02)
                order.append(("out", i))

        tasks = [asyncio.ensure_future(use(i)) for i in range(5)]
        await asyncio.sleep(0)
        waiting = asyncio.ensure_future(device.acquire())
        waiting.cancel()  # a waiter that gives up never keeps a slot
        await asyncio.gather(*tasks)
        return order, device.free_slots(), device.holds

    order, free, holds = run(main())
    inside = 0
    for step, _ in order:
        inside += 1 if step == "in" else -1
        assert inside <= 2, order
    assert [i for step, i in order if step == "in"] == [0, 1, 2, 3, 4]
    assert (free, holds) == (2, 5)


def test_device_settings_are_validated_by_name():
    from services.settings import SettingsError, settings_from_env

    for name, value in [("DEVICE_SLOTS", "-1"), ("DEVICE_PER_ITEM_MS", "nan"),
                        ("MODEL_BATCHING", "adaptive"), ("MODEL_BATCH_MAX_SIZE", "0"),
                        ("MODEL_BATCH_MAX_WAIT_MS", "-5"), ("CPU_BURN_PER_ITEM_S", "x")]:
        with pytest.raises(SettingsError) as caught:
            settings_from_env({f"SCORING_LAB_{name}": value})
        assert str(caught.value).startswith(f"SCORING_LAB_{name}='{value}'"), caught.value
    defaults = settings_from_env({})
    assert (defaults.device_slots, defaults.model_batching) == (0, "off")
