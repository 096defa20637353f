"""The job client of an open-model run: submit, then poll until the job ends (experiments/
load/job_log.py says what is recorded and why). Imported by the locustfile only: it sleeps
with gevent and talks through a Locust FastHttpUser's client.

Every submit and poll is also a Locust request (its stats, and the request log beside this
one); the job log is the record the analysis reads. A job still being polled when the run
ends is written by ``flush_unfinished``, called from the locustfile's test_stop hook after
the clients' greenlets are killed, so that no job goes unrecorded and none twice.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import gevent
from geventhttpclient.response import HTTPConnectionClosed

from experiments.load.job_log import JOB_LOG_COLUMNS, JobSpec
from services import errors, jobs

# The code services/errors.py gives a full queue's 503 (nothing queued: a rejection).
QUEUE_FULL = errors.queue_full(1, 0).code
JSON_HEADERS = {"Content-Type": "application/json"}


def closed_unanswered(resp) -> bool:
    """The server closed the connection before sending any of an answer (the locustfile's
    _score says why a client resends such a request once)."""
    return not resp.status_code and isinstance(getattr(resp, "error", None),
                                               HTTPConnectionClosed)


@dataclass
class JobState:
    scheduled: float
    submit_unix: float = 0.0
    submit_ms: float | None = None
    submit_status: int = 0
    job_id: str = ""
    polls: int = 0
    poll_errors: int = 0
    written: bool = False


class JobLog:
    """Buffered CSV of every job (JOB_LOG_COLUMNS); with no path (a locustfile run by hand,
    without SCORING_LAB_REQUEST_LOG) the jobs run and nothing is written."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._file = self._writer = None
        if self.path is not None:
            self._file = self.path.open("w", newline="", buffering=1 << 20)
            self._writer = csv.writer(self._file)
            self._writer.writerow(JOB_LOG_COLUMNS)

    def write(self, s: JobState, outcome: str, result_unix: float | None = None,
              error: str = "") -> None:
        if s.written:
            return
        s.written = True
        if self._writer is None:
            return
        self._writer.writerow([
            f"{s.scheduled:.6f}", f"{s.submit_unix:.6f}" if s.submit_unix else "",
            "" if s.submit_ms is None else f"{s.submit_ms:.3f}", s.submit_status, s.job_id,
            outcome, "" if result_unix is None else f"{result_unix:.6f}", s.polls,
            s.poll_errors, error.replace("\n", " ")[:200]])

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()


IN_FLIGHT_JOBS: dict[int, JobState] = {}


def run_job(client, path: str, payload, spec: JobSpec, scheduled_unix: float, log: JobLog,
            retry_closed: int = 0) -> int:
    """One job's life: submit to `path`, poll its Location until it ends or its deadline;
    its row goes to `log`. Returns the submit's resends (see closed_unanswered)."""
    state = JobState(scheduled_unix)
    key = id(state)
    IN_FLIGHT_JOBS[key] = state
    try:
        location, resends = _submit(client, path, payload, state, log, retry_closed)
        if location is not None:
            _poll(client, location, f"{path}/<id>", spec, state, log)
        return resends
    finally:
        IN_FLIGHT_JOBS.pop(key, None)


def _submit(client, path: str, payload, state: JobState, log: JobLog,
            retry_closed: int) -> tuple[str | None, int]:
    for attempt in range(retry_closed + 1):
        state.submit_unix = time.time()
        resp = client.post(path, json=payload, headers=JSON_HEADERS, name=path,
                           catch_response=True, context={"scheduled_unix": state.scheduled})
        state.submit_ms = (time.time() - state.submit_unix) * 1000
        if attempt < retry_closed and closed_unanswered(resp):
            continue  # never entered: Locust reports a response on leaving its context
        state.submit_status = resp.status_code or 0
        with resp:
            return _accepted(resp, path, state, log), attempt
    raise AssertionError("unreachable: the last attempt always returns")


def _body(resp) -> dict:
    try:
        body = resp.json()
    except Exception:  # noqa: BLE001 - any bad body is answered below as such
        return {}
    return body if isinstance(body, dict) else {}


def _accepted(resp, path: str, state: JobState, log: JobLog) -> str | None:
    """The Location to poll when the submit was accepted; else the job's row is written."""
    status, body = resp.status_code or 0, _body(resp)
    if status == 202 and isinstance(body.get("id"), str):
        state.job_id = body["id"]
        resp.success()
        # a client follows the Location it is given (the API's, relative to the host)
        location = resp.headers.get("Location") if resp.headers is not None else None
        return location or f"{path}/{state.job_id}"
    if status == 503 and body.get("error") == QUEUE_FULL:
        resp.failure(f"HTTP 503 {QUEUE_FULL}")
        log.write(state, "rejected", error=QUEUE_FULL)
        return None
    cause = getattr(resp, "error", None) if not status else None
    why = (f"HTTP {status} {body.get('error', '')}".strip() if status
           else f"no answer: {type(cause).__name__}: {cause}")
    resp.failure(why)
    log.write(state, "submit_error", error=why)
    return None


def _poll(client, location: str, name: str, spec: JobSpec, state: JobState,
          log: JobLog) -> None:
    deadline = state.scheduled + spec.deadline_s
    if spec.wait_s is not None:  # long polls: the server holds each until the end or wait_s
        location += ("&" if "?" in location else "?") + f"wait={spec.wait_s:.3f}"
    while True:
        if spec.wait_s is None:
            gevent.sleep(spec.poll_interval_s)
        if time.time() >= deadline:
            log.write(state, "deadline", error=f"still pending after {spec.deadline_s:g} s")
            return
        state.polls += 1
        resp = client.get(location, name=name, catch_response=True)
        with resp:
            status, body = resp.status_code or 0, _body(resp)
            if status == 200 and body.get("status") == jobs.PENDING:
                resp.success()
                continue
            if status == 200 and body.get("status") == jobs.DONE:
                detail = (body.get("result") or {}).get("detail")
                numeric = (isinstance(detail, int | float) and not isinstance(detail, bool)
                           and math.isfinite(detail))
                if numeric:
                    resp.success()
                else:
                    resp.failure(f"done without a numeric result: {detail!r}")
                log.write(state, "done" if numeric else "wrong_answer", time.time(),
                          "" if numeric else f"detail {detail!r}")
                return
            if status == 200 and body.get("status") == jobs.FAILED:
                resp.success()  # the poll worked; the job's failure is the job's outcome
                code = (body.get("error") or {}).get("error", "unknown")
                log.write(state, "failed", time.time(), str(code))
                return
            if status == 404:
                resp.failure("HTTP 404: job unknown")
                log.write(state, "lost", time.time(), "HTTP 404 on a poll")
                return
            state.poll_errors += 1
            resp.failure(f"HTTP {status} on a poll" if status else "no answer to a poll")
        if spec.wait_s is not None:
            # (only a failed poll gets here) a long poll that failed is not sent again at
            # once (a server or Redis away would be hammered): the next waits a poll
            # interval, as a plain poll does
            gevent.sleep(spec.poll_interval_s)


def flush_unfinished(snapshot: list[JobState], log: JobLog) -> int:
    """Rows for the jobs of `snapshot` (taken before the clients were killed) that wrote none:
    still being polled, or not yet submitted, when the run ended. Returns how many."""
    n = 0
    for state in snapshot:
        if not state.written:
            log.write(state, "unfinished", error="still polled when the run ended")
            n += 1
    return n
