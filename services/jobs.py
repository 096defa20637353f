"""The job-queue pattern, shared by both architectures (issue 24): what a job is, its id, its
paths, the bound of its queue and the answers about it. The queues themselves are RQ (sync,
services/sync_app/job_queue.py) and SAQ (async, services/async_app/job_queue.py), on the lab's
Redis; this module knows neither.

A client POSTs the same body and ``?entity=`` as to the in-line predict endpoint to
``/api/v1/ml/{arch}/jobs``: it is validated at once (the same 4xx as predict), queued, and
answered 202 with the job's id and its ``Location``. A worker does what the in-line handler does
(features from Redis, the model API ``model_calls`` times, the mean) and stores the outcome for
``queue_result_ttl_s``. ``GET .../jobs/{id}`` answers pending, done (with the result), failed
(with the reason, in the lab's error shape) or 404 for an id it does not know (never submitted,
or expired).

``GET .../jobs/{id}?wait=S`` is the long poll: the answer comes as soon as the job ends, or
after S seconds (at most ``queue_max_wait_s``) with pending. Each queue wakes it with its own
notice of a job's end (RQ: the job's result stream, which RQ's ``latest_result(timeout=)``
blocks on; SAQ: its pub/sub update of the job, which SAQ's ``refresh(until_complete=)``
listens to), so a client learns of the end within a Redis round trip instead of a poll
interval; a waiting poll holds what a request holds in its architecture (a worker thread or
process in the sync stack, a coroutine in the async one).

What a job function returns (both queues store it as it is): ``{"result": {"detail": x}}``, or
``{"error": <the lab's error body>}`` for a job that failed for a reason of its own (unknown
entity, model down). Those are answers, not crashes: the queue does not retry them (its retries
are kept for a worker that died under a job).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from services import errors
from services.settings import Arch, Settings

PENDING, DONE, FAILED = "pending", "done", "failed"
# One queue per architecture, on the same Redis as the features.
QUEUE_NAMES = {Arch.SYNC: "scoring-lab-sync", Arch.ASYNC: "scoring-lab-async"}
_JOB_ID_RE = re.compile(r"[0-9a-f]{32}")
# ?wait=: decimal seconds, as a person or a client library writes them (no exponent, no sign,
# no "nan"/"inf" that float() would take).
_WAIT_RE = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")


def jobs_path(arch: Arch) -> str:
    return f"/api/v1/ml/{arch}/jobs"


def job_path(arch: Arch, job_id: str) -> str:
    return f"{jobs_path(arch)}/{job_id}"


def new_job_id() -> str:
    """The id a job is queued under (both queues take the caller's): 128 random bits."""
    return uuid.uuid4().hex


def check_job_id(job_id: str) -> str:
    """An id as polled: anything that is not an id the lab makes is unknown (404), before any
    Redis call."""
    if not _JOB_ID_RE.fullmatch(job_id):
        raise errors.job_not_found(job_id)
    return job_id


def wait_seconds(given: Sequence[str], settings: Settings) -> float | None:
    """How long a poll may wait for its job to end (``?wait=``): None (answer at once) when not
    given; 422 invalid_wait unless given once, as seconds in (0, queue_max_wait_s]."""
    if not given:
        return None
    if len(given) > 1 or not _WAIT_RE.fullmatch(given[0]):
        raise errors.invalid_wait(list(given), settings.queue_max_wait_s)
    wait = float(given[0])
    if not 0 < wait <= settings.queue_max_wait_s:
        raise errors.invalid_wait(list(given), settings.queue_max_wait_s)
    return wait


def ended(answer: dict[str, object]) -> bool:
    """Whether a status answer is final (done or failed): a long poll stops waiting."""
    return answer.get("status") != PENDING


def check_room(waiting: int, settings: Settings) -> None:
    """Refuse a submit when ``waiting`` jobs (accepted, not started) fill the queue. The count
    is read just before the job is queued, so submits racing for the last place may together
    pass the bound by at most the number of them in flight at that moment (the workers' handlers
    at once), never more: the queue stays bounded, and no refused job is ever queued."""
    if waiting >= settings.queue_max_length:
        raise errors.queue_full(settings.queue_max_length, settings.queue_retry_after_s)


def job_input(values: list[float], entity: str) -> dict[str, object]:
    """A job's arguments (JSON-safe: both queues serialise them)."""
    return {"values": values, "entity": entity}


def outcome_result(prediction: dict[str, float]) -> dict[str, object]:
    return {"result": prediction}


def outcome_error(error: errors.ApiError) -> dict[str, object]:
    return {"error": error.body()}


def pending(job_id: str) -> dict[str, object]:
    """The answer about a job not finished yet (also the body of the submit's 202)."""
    return {"id": job_id, "status": PENDING}


def finished(job_id: str, outcome: object) -> dict[str, object]:
    """The answer about a job whose function returned ``outcome``."""
    if isinstance(outcome, dict) and isinstance(outcome.get("result"), dict):
        return {"id": job_id, "status": DONE, "result": outcome["result"]}
    if isinstance(outcome, dict) and isinstance(outcome.get("error"), dict):
        return {"id": job_id, "status": FAILED, "error": outcome["error"]}
    return failed(job_id, f"the job returned {str(outcome)[:80]}, not an outcome")


def failed(job_id: str, reason: str) -> dict[str, object]:
    """The answer about a job that ended without an outcome of its own (the queue failed it:
    worker lost with no retry left, timed out, crashed); ``reason`` is the queue's last line."""
    return {"id": job_id, "status": FAILED, "error": errors.job_failed(reason).body()}


def last_line(text: str | None, default: str) -> str:
    """The last non-empty line of a traceback or a queue's error text (the exception), short."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return (lines[-1] if lines else default)[:300]
