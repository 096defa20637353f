"""Errors a lab service answers with: one JSON shape and one status per cause, in both
architectures, so a client (and the tests) cannot tell the frameworks apart by their errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus


@dataclass(eq=False)
class ApiError(Exception):
    status: int
    code: str
    message: str
    # Sent as the Retry-After header (whole seconds) by both apps' error handlers, when set.
    retry_after_s: int | None = field(default=None, kw_only=True)

    def body(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message, "status": self.status}


def headers(error: ApiError) -> dict[str, str]:
    """The HTTP headers of an error answer besides its JSON body."""
    return {} if error.retry_after_s is None else {"Retry-After": str(error.retry_after_s)}


def http_error(status: int, message: str | None = None) -> ApiError:
    """A framework-level error (unknown path, wrong method) in the lab's shape."""
    phrase = HTTPStatus(status).phrase
    return ApiError(status, phrase.lower().replace(" ", "_"), message or phrase)


# Causes shared by both architectures. Functions rather than constants because each message
# names the bad value.
def unsupported_media_type(content_type: str | None) -> ApiError:
    return ApiError(
        415,
        "unsupported_media_type",
        f"Content-Type must be application/json, got {content_type or 'none'!r}",
    )


def body_too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request body is {size} bytes, the limit is {limit}")


def invalid_json(reason: str) -> ApiError:
    return ApiError(400, "invalid_json", f"request body is not valid JSON: {reason}")


def invalid_payload(reason: str) -> ApiError:
    return ApiError(422, "invalid_payload", reason)


def invalid_entity(entity: str) -> ApiError:
    return ApiError(
        422, "invalid_entity", f"entity {entity[:80]!r} is not 1-64 characters of [A-Za-z0-9_.:-]"
    )


def repeated_entity(count: int) -> ApiError:
    return ApiError(422, "invalid_entity", f"?entity= given {count} times, give it once")


def entity_not_found(entity: str) -> ApiError:
    return ApiError(404, "entity_not_found", f"no features stored for entity {entity!r}")


def feature_store_unavailable(reason: str) -> ApiError:
    return ApiError(503, "feature_store_unavailable", f"feature store unavailable: {reason}")


def model_unavailable(reason: str) -> ApiError:
    return ApiError(502, "model_unavailable", f"model API unavailable: {reason}")


def model_timeout(timeout_s: float) -> ApiError:
    return ApiError(504, "model_timeout", f"model API did not answer within {timeout_s:g} s")


def request_timeout(timeout_s: float) -> ApiError:
    return ApiError(408, "request_timeout", f"request not received within {timeout_s:g} s")


def headers_too_large(limit: int) -> ApiError:
    return ApiError(
        431, "request_header_fields_too_large", f"request headers exceed {limit} bytes"
    )


def bad_request(reason: str) -> ApiError:
    """An HTTP message the server's parser refused (before any app code ran)."""
    return ApiError(400, "bad_request", f"malformed HTTP request: {reason}")


def model_bad_response(reason: str) -> ApiError:
    return ApiError(502, "model_bad_response", f"model API answered badly: {reason}")


# Admission control (services/admission.py): both 503, the request was not worked on at all
# (no Redis, no model call), so a client may retry it elsewhere or later (Retry-After).
def overloaded(limit: int) -> ApiError:
    return ApiError(503, "overloaded",
                    f"this worker already holds its limit of {limit} scoring requests")


def deadline_exceeded(late_s: float) -> ApiError:
    return ApiError(503, "deadline_exceeded",
                    f"the request's deadline passed {late_s * 1000:.0f} ms before it was "
                    "started; not worked on")


def invalid_deadline(value: str) -> ApiError:
    return ApiError(400, "invalid_deadline",
                    f"X-Request-Deadline {value[:40]!r} is not a unix time in seconds")

def prediction_failed(reason: str) -> ApiError:
    """The model failed a whole batch: every item of it gets this, none is left waiting."""
    return ApiError(500, "prediction_failed", f"the model failed this batch: {reason}")


def prediction_timeout(timeout_s: float) -> ApiError:
    return ApiError(504, "prediction_timeout",
                    f"the model did not finish this batch within {timeout_s:g} s")


def service_busy(max_latency_ms: int) -> ApiError:
    """The BentoML model server's batcher refused a request it could not answer within its max
    latency (BentoML's own 503 "Service Busy"); nothing was run for it."""
    return ApiError(503, "service_busy", "the batcher cannot answer within its max latency "
                    f"({max_latency_ms} ms): the request was not run")


# The job queue (services/jobs.py): submit answers 202 with a job id, the id is polled.
def job_not_found(job_id: str) -> ApiError:
    return ApiError(404, "job_not_found",
                    f"no job {job_id[:80]!r}: never submitted, or its answer has expired")


def invalid_wait(given: list[str], max_wait_s: float) -> ApiError:
    """A poll's ``?wait=`` that is not one number of seconds in (0, max_wait_s]."""
    if len(given) > 1:
        return ApiError(422, "invalid_wait", f"?wait= given {len(given)} times, give it once")
    return ApiError(422, "invalid_wait", f"?wait= must be seconds, more than 0 and at most "
                    f"{max_wait_s:g} (decimal digits), got {given[0][:80]!r}")


def queue_full(limit: int, retry_after_s: int) -> ApiError:
    """Not accepted: nothing was queued (no job id exists), so the client retries later."""
    return ApiError(503, "queue_full", f"the job queue already holds its limit of {limit} "
                    "waiting jobs; not accepted", retry_after_s=retry_after_s)


def queue_unavailable(reason: str) -> ApiError:
    return ApiError(503, "queue_unavailable", f"job queue unavailable: {reason}")


def job_failed(reason: str) -> ApiError:
    """The error of a job that ended without an answer of its own (its worker died and no
    retry was left, its time ran out, or it crashed): carried in the job's status, never an
    HTTP status of the poll itself."""
    return ApiError(500, "job_failed", f"the job ended without a result: {reason}")
