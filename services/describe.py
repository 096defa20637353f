"""``GET /`` of every service: what it is and which endpoints it has (the same in both
architectures)."""

from __future__ import annotations

from services import admission
from services.jobs import jobs_path
from services.settings import Arch, Role, Settings

HEALTH_PATH = "/api/v1/healthcheck"
# Model APIs only: this worker's device and batch counters (services/device.py, batcher.py).
DEBUG_MODEL_PATH = "/api/v1/debug/model"


def predict_path(arch: Arch) -> str:
    return f"/api/v1/ml/{arch}/predict"


def describe(role: Role, arch: Arch, settings: Settings, framework: str) -> dict[str, object]:
    concurrent = arch is Arch.ASYNC and not settings.sequential_model_calls
    calls = "concurrently" if concurrent else "one after the other"
    device = (f" on a device of {settings.device_slots} slot(s)" if settings.device_slots
              else " (no device limit)")
    batching = (f", micro-batched (at most {settings.model_batch_max_size} items, "
                f"{settings.model_batch_max_wait_ms:g} ms wait)"
                if arch is Arch.ASYNC and settings.model_batching == "micro" else "")
    what = {
        Role.MODEL: "model API: a prediction is a "
        f"{settings.sleep_min_s * 1000:g}-{settings.sleep_max_s * 1000:g} ms wait"
        + device + batching,
        Role.SCORING: "scoring handler: reads an entity's features from Redis, calls the model "
        f"API {settings.model_calls} times ({calls}), returns the mean prediction",
    }[role]
    endpoints = {
        f"GET {HEALTH_PATH}": 'health check -> {"status": "OK"}',
        f"POST {predict_path(arch)}": "body: JSON list of numbers, e.g. [5.1,3.5,1.4,0.2] "
        + ('-> {"detail": <prediction>} ; query ?entity=<id> picks the stored features'
           if role is Role.SCORING else
           '-> {"detail": <seconds slept>, "input_mean": <mean of the values>, '
           '"batch_size": <items in its batch>}'),
    }
    if role is Role.SCORING:
        jobs = jobs_path(arch)
        endpoints[f"POST {jobs}"] = ("the predict body and ?entity= as a job: 202 {\"id\", "
                                     "\"status\": \"pending\"} and a Location to poll; 503 "
                                     "queue_full with Retry-After when the queue is full")
        endpoints[f"GET {jobs}/<id>"] = ('{"status": "pending"|"done"|"failed"} with the '
                                         '"result" (done) or the "error" (failed); 404 once '
                                         "unknown or expired")
    if role is Role.SCORING and admission.enabled(settings):
        endpoints[f"GET {admission.STATS_PATH}"] = (
            "admission control's counters of the worker that answers (JSON)")
    if role is Role.MODEL:
        endpoints[f"GET {DEBUG_MODEL_PATH}"] = ("this worker's device and batch counters "
                                                "(pid, slots free, holds, busy s, batch sizes)")
    if framework == "fastapi":
        endpoints["GET /docs"] = "OpenAPI (Swagger) documentation"
    return {"service": f"{role}-{arch}", "framework": framework, "description": what,
            "endpoints": endpoints}
